"""Built-in objectives."""

from hookformer.core.hookspecs import hookimpl
from hookformer.core.parts import PartSpec

_HERE = __name__


@hookimpl
def hookformer_parts():
    return [
        PartSpec("objective", "clm", "causal language modeling: predict each next token",
                 factory=f"{_HERE}.clm:build", options=f"{_HERE}.clm:CLMOptions"),
        PartSpec("objective", "mlm", "masked language modeling (BERT): predict 15% of the tokens from both sides; "
                 "use with model.causal: false", factory=f"{_HERE}.mlm:build", options=f"{_HERE}.mlm:MLMOptions"),
    ]
