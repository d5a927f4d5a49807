"""Built-in models."""

from hookformer.core.hookspecs import hookimpl
from hookformer.core.parts import PartSpec

_HERE = __name__


@hookimpl
def hookformer_parts():
    return [
        PartSpec("model", "transformer", "pre-norm Transformer on the attention stage; causal (GPT-style decoder) "
                 "by default, bidirectional with causal: false", factory=f"{_HERE}.transformer:build",
                 options=f"{_HERE}.transformer:TransformerOptions"),
    ]
