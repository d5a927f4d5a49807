"""Built-in callbacks."""

from hookformer.core.hookspecs import hookimpl
from hookformer.core.parts import PartSpec

_HERE = __name__


@hookimpl
def hookformer_parts():
    return [
        PartSpec("callback", "loss_curve", "plots training and validation loss to loss.png in the run directory",
                 factory=f"{_HERE}.loss_curve:build", options=f"{_HERE}.loss_curve:LossCurveOptions"),
    ]
