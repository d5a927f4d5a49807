"""Built-in learning-rate schedules: a factor of the optimizer's learning rate per step."""

from hookformer.core.hookspecs import hookimpl
from hookformer.core.parts import PartSpec

_HERE = __name__


@hookimpl
def hookformer_parts():
    return [
        PartSpec("scheduler", "constant", "constant learning rate after an optional linear warmup",
                 factory=f"{_HERE}.constant:build", options=f"{_HERE}.warmup:WarmupOptions"),
        PartSpec("scheduler", "linear", "linear warmup, then linear decay to min_lr_ratio",
                 factory=f"{_HERE}.linear:build", options=f"{_HERE}.warmup:DecayOptions"),
        PartSpec("scheduler", "cosine", "linear warmup, then cosine decay to min_lr_ratio",
                 factory=f"{_HERE}.cosine:build", options=f"{_HERE}.warmup:DecayOptions"),
        PartSpec("scheduler", "wsd", "warmup-stable-decay: linear warmup, the peak, then a linear, cosine or 1-sqrt "
                 "decay over the last decay_fraction of the steps", factory=f"{_HERE}.wsd:build",
                 options=f"{_HERE}.wsd:WSDOptions"),
    ]
