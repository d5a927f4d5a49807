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
        PartSpec("objective", "classification", "sequence classification (single texts or pairs): a classifier "
                 "head on the pooled sequence, cross-entropy against the labels; needs labeled data",
                 factory=f"{_HERE}.classification:build", options=f"{_HERE}.classification:ClassificationOptions"),
        PartSpec("objective", "token_classification", "token classification (e.g. named entities): a classifier "
                 "head at every position, scored where the data puts a label (each word's first sub-word piece)",
                 factory=f"{_HERE}.token_classification:build",
                 options=f"{_HERE}.token_classification:TokenClassificationOptions"),
    ]
