"""Built-in tokenizers."""

from hookformer.core.hookspecs import hookimpl
from hookformer.core.parts import PartSpec

_HERE = __name__


@hookimpl
def hookformer_parts():
    return [
        PartSpec("tokenizer", "byte", "UTF-8 bytes (256 ids) plus special tokens; no training, exact round trip",
                 factory=f"{_HERE}.byte:build", options=f"{_HERE}.byte:ByteTokenizerOptions"),
        PartSpec("tokenizer", "sentencepiece",
                 "SentencePiece BPE or unigram; trained on the training corpus when no model file is given",
                 factory=f"{_HERE}.sentencepiece:build", options=f"{_HERE}.sentencepiece:SentencePieceOptions"),
        PartSpec("tokenizer", "hf_tokenizer", "a Hugging Face tokenizer.json (byte-level BPE, WordPiece, ...) run by "
                 "the tokenizers library; special tokens mapped onto hookformer's",
                 factory=f"{_HERE}.hf:build", options=f"{_HERE}.hf:HFTokenizerOptions"),
    ]
