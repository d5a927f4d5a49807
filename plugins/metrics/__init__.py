"""Built-in evaluation metrics."""

from hookformer.core.hookspecs import hookimpl
from hookformer.core.parts import PartSpec

_HERE = __name__


@hookimpl
def hookformer_parts():
    return [
        PartSpec("metric", "loss", "mean loss per item over the evaluation set (val_loss)",
                 factory=f"{_HERE}.loss:build"),
        PartSpec("metric", "perplexity", "exp of the mean token loss (val_perplexity)",
                 factory=f"{_HERE}.perplexity:build"),
        PartSpec("metric", "accuracy", "share of items whose argmax prediction equals the target (val_accuracy)",
                 factory=f"{_HERE}.accuracy:build"),
    ]
