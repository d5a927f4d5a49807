"""Built-in hook parts: objects that implement run hooks (see hookformer.core.hookspecs), listed in ``hooks:``."""

from hookformer.core.hookspecs import hookimpl
from hookformer.core.parts import PartSpec

_HERE = __name__


@hookimpl
def hookformer_parts():
    return [
        PartSpec("hook", "loss_curve", "plots training and validation loss to loss.png in the run directory, after "
                 "every evaluation and at the end", factory=f"{_HERE}.loss_curve:build",
                 options=f"{_HERE}.loss_curve:LossCurveOptions"),
        PartSpec("hook", "lora", "LoRA: trains low-rank adapters on the model's linear layers with the rest frozen; "
                 "saves them alone with each checkpoint and merges them for export", factory=f"{_HERE}.lora:build",
                 options=f"{_HERE}.lora:LoraOptions"),
    ]
