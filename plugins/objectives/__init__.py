"""Built-in objectives."""

from hookformer.core.hookspecs import hookimpl
from hookformer.core.parts import PartSpec

_HERE = __name__


@hookimpl
def hookformer_parts():
    return [
        PartSpec("objective", "clm", "causal language modeling: predict each next token",
                 factory=f"{_HERE}.clm:build", options=f"{_HERE}.clm:CLMOptions"),
    ]
