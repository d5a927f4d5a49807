"""Tokenizer part ``sentencepiece``: a BPE or unigram SentencePiece model, trained on the run's training text unless a
model file is given, and saved as ``RUN_DIR/tokenizer/sentencepiece.model``.

Models are trained so that any UTF-8 text round-trips exactly: identity normalization, no dummy prefix, whitespace
kept as it is, and byte fallback for characters outside the vocabulary (so ``unk`` is never produced).

A BPE model encodes with SentencePiece. A unigram model encodes with the ``tokenizers`` library's Unigram over the
same pieces and scores, the form ``hookformer export`` writes, so the exported tokenizer gives the run's ids exactly.
It segments as SentencePiece does except (1) where several orderings of the same pieces score equally (a long run of
spaces): SentencePiece's choice follows the float32 rounding of its running sums, tokenizers' (float64) does not; and
(2) around text that spells a control or byte piece's name (``<s>``, ``<0x41>``): a piece may not cross the ``<``
that begins it.
"""

from __future__ import annotations

import io
import os
import re
from functools import cached_property
from hashlib import sha256
from pathlib import Path
from typing import Iterable, Iterator, Literal

import sentencepiece as spm
import sentencepiece.sentencepiece_model_pb2 as model_pb2
from pydantic import Field

from hookformer.core.errors import ConfigError, DataError
from hookformer.core.parts import BuildContext, DataSource, PartOptions, SpecialTokens
from hookformer.plugins.tokenizers.byte import HF_SPECIAL_NAMES, char_spans, write_hf_files

#: Where a run keeps its model; a resumed run loads it instead of training again.
MODEL_PATH = Path("tokenizer") / "sentencepiece.model"
#: Ids every trained model reserves: 256 byte pieces, 7 special tokens and the newline symbol.
RESERVED_IDS = 256 + 7 + 1
_CONTROL_SYMBOLS = ["<mask>", "<cls>", "<sep>"]  # ids 4, 5, 6, after pad, unk, bos, eos
_TRAINER_SETTINGS = dict(
    normalization_rule_name="identity",  # no NFKC: text comes back byte for byte
    add_dummy_prefix=False,  # no space invented before the text
    remove_extra_whitespaces=False,  # leading, trailing and repeated spaces are text too
    allow_whitespace_only_pieces=True,  # runs of spaces (code indentation) become single pieces
    byte_fallback=True,  # characters outside the vocabulary become byte pieces, never unk
    pad_id=0, unk_id=1, bos_id=2, eos_id=3,
    control_symbols=_CONTROL_SYMBOLS,
    user_defined_symbols=["\n"],  # one id per newline; training text is fed line by line, so it is never merged
    minloglevel=2,  # errors only: training logs hundreds of lines otherwise
)
# Training skips sentences longer than max_sentence_length (4192 bytes by default); a UTF-8 character is at most 4
# bytes, so chunks of this many characters always fit.
_CHUNK_CHARS = 1024
# SentencePiece writes whitespace as U+2581 internally, so a literal U+2581 in the text would decode as a space.
_SPACE_SYMBOL = "\u2581"
# A model file must round-trip this; models trained with other settings (e.g. NFKC, dummy prefix) do not.
_PROBE = "  x\ty\n\n中文 😀 e\u0301 \u2581 ﬁ  "


class SentencePieceOptions(PartOptions):
    model_type: Literal["bpe", "unigram"] = Field("bpe", description="the SentencePiece algorithm to train")
    vocab_size: int = Field(
        2000, ge=RESERVED_IDS + 1,
        description=f"number of ids (more than {RESERVED_IDS}): {RESERVED_IDS} are reserved (bytes, special tokens, "
                    "newline) and each character of the training text needs one; ignored with model_file")
    model_file: str | None = Field(
        None, description="an existing .model to use instead of training one, such as another run's "
                          "tokenizer/sentencepiece.model; it is copied into the run directory")
    character_coverage: float = Field(
        1.0, gt=0.0, le=1.0,
        description="share of the training characters that get their own piece; rarer ones are spelled in bytes")
    max_training_chars: int = Field(
        20_000_000, ge=1, description="train on at most this many characters of the training text (keeps training "
                                      "fast; the rest is still tokenized)")
    num_threads: int = Field(
        2, ge=1, description="threads for training and a BPE model's batch encoding (unigram models encode in "
                             "tokenizers' thread pool); the trained model depends on it, so changing it trains a "
                             "different tokenizer")
    sentinel_tokens: int = Field(
        0, ge=0, le=1000, description="train with this many sentinel pieces <extra_id_0>, <extra_id_1>, ... (one id "
                                      "each, decoded as written), which objective span_corruption needs; ignored "
                                      "with model_file")


class SentencePieceTokenizer:
    """A SentencePiece model with the :class:`~hookformer.core.parts.Tokenizer` interface."""

    def __init__(self, model_proto: bytes, num_threads: int = 1):
        self._proto = model_proto
        self._num_threads = num_threads
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        sp = self._sp
        self.vocab_size: int = sp.get_piece_size()
        # piece_to_id answers unk for a missing piece; load() reports that.
        self.special = SpecialTokens(pad=sp.pad_id(), bos=sp.bos_id(), eos=sp.eos_id(), unk=sp.unk_id(),
                                     mask=sp.piece_to_id("<mask>"), cls=sp.piece_to_id("<cls>"),
                                     sep=sp.piece_to_id("<sep>"))
        self._dropped = frozenset(i for i in range(self.vocab_size) if sp.is_control(i) or sp.is_unknown(i))
        self._space_symbol_ids = [sp.piece_to_id(f"<0x{b:02X}>") for b in _SPACE_SYMBOL.encode("utf-8")]
        model = model_pb2.ModelProto.FromString(model_proto)
        self._unigram = (tokenizers_form(model)
                         if model.trainer_spec.model_type == model_pb2.TrainerSpec.UNIGRAM else None)
        # "unigram-f64": tokenized data cached by a version that encoded unigram models with SentencePiece is stale.
        self._fingerprint = ("sentencepiece-" + ("unigram-f64-" if self._unigram else "")
                             + sha256(model_proto).hexdigest()[:16])

    @property
    def model_proto(self) -> bytes:
        """The serialized model (the content of a .model file)."""
        return self._proto

    def encode(self, text: str) -> list[int]:
        if self._unigram is not None:
            return self._unigram.encode(text, add_special_tokens=False).ids
        if _SPACE_SYMBOL in text:
            return self._encode_with_space_symbol(text)
        return self._sp.encode(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if self._unigram is not None:
            return [e.ids for e in self._unigram.encode_batch(texts, add_special_tokens=False)]
        batch = self._sp.encode(texts, num_threads=self._num_threads)
        return [self._encode_with_space_symbol(t) if _SPACE_SYMBOL in t else ids for t, ids in zip(texts, batch)]

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """``encode(text)`` and the character span of each token. Pieces spell the text's UTF-8 bytes exactly
        (identity normalization, no dummy prefix; literal U+2581 in byte pieces), so each span follows from the
        pieces' byte lengths; the byte pieces of one character each cover that character."""
        ids = self.encode(text)
        lengths = self._piece_byte_lengths
        return ids, char_spans(text, (lengths[i] for i in ids))

    @cached_property
    def _piece_byte_lengths(self) -> list[int]:
        """Bytes of text each id spells: 1 for a byte piece, none for control symbols, else its UTF-8 length with
        the space symbol as one space."""
        sp = self._sp
        return [1 if sp.is_byte(i) else 0 if i in self._dropped else
                len(sp.id_to_piece(i).replace(_SPACE_SYMBOL, " ").encode("utf-8")) for i in range(self.vocab_size)]

    def decode(self, ids: Iterable[int]) -> str:
        """Ids back to text. Special, control and out-of-range ids are dropped; byte pieces that do not form valid
        UTF-8 (a model can generate them) become U+FFFD."""
        dropped, size = self._dropped, self.vocab_size
        return self._sp.decode([i for i in map(int, ids) if 0 <= i < size and i not in dropped])

    def fingerprint(self) -> str:
        return self._fingerprint

    def save_hf(self, folder: Path) -> str | None:
        """Write ``tokenizer.json`` and ``tokenizer_config.json`` (``hookformer export``) that give :meth:`encode`'s
        ids (:func:`tokenizers_form`); returns why not, writing nothing, for a model that has no such form."""
        model = model_pb2.ModelProto.FromString(self._proto)
        names = hf_piece_names(model)
        if {role: names[getattr(self.special, role)] for role in HF_SPECIAL_NAMES} != HF_SPECIAL_NAMES:
            return "its special pieces are not named " + ", ".join(f"{r} {n}" for r, n in HF_SPECIAL_NAMES.items())
        if model.trainer_spec.model_type not in (model_pb2.TrainerSpec.BPE, model_pb2.TrainerSpec.UNIGRAM):
            kind = model_pb2.TrainerSpec.ModelType.Name(model.trainer_spec.model_type).lower()
            return f"a {kind} SentencePiece model has no Hugging Face form; only BPE and unigram models are converted"
        write_hf_files(folder, tokenizers_form(model))
        return None

    def _encode_with_space_symbol(self, text: str) -> list[int]:
        """Encode around literal U+2581, spelling each one in byte pieces (they decode to the character itself)."""
        ids: list[int] = []
        for n, part in enumerate(text.split(_SPACE_SYMBOL)):
            if n:
                ids.extend(self._space_symbol_ids)
            ids.extend(self._sp.encode(part))
        return ids

    def __getstate__(self) -> dict:
        return {"model_proto": self._proto, "num_threads": self._num_threads}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["model_proto"], state["num_threads"])


def hf_piece_names(model) -> list[str]:
    """Each piece's name in the Hugging Face form: real spaces instead of U+2581 in text pieces, so a literal U+2581
    is in no piece and falls back to its bytes, as :meth:`SentencePieceTokenizer.encode` spells it."""
    kind = model_pb2.ModelProto.SentencePiece
    return [p.piece.replace(_SPACE_SYMBOL, " ") if p.type in (kind.NORMAL, kind.USER_DEFINED) else p.piece
            for p in model.pieces]


def tokenizers_form(model):
    """A BPE or unigram SentencePiece ``model`` (a ModelProto trained as :data:`_TRAINER_SETTINGS` says) as a
    ``tokenizers.Tokenizer`` with no normalizer and byte fallback, whose ids are
    :meth:`SentencePieceTokenizer.encode`'s.

    BPE: SentencePiece merges the adjacent pair whose concatenation is the highest-scoring piece, so the merges list
    every split of every piece into two pieces, ordered by that score. Unigram: the same pieces and scores; a
    pre-tokenizer isolates a ``<`` that begins the name of a control, unknown or byte piece, so text that spells one
    stays text (SentencePiece never matches those pieces in the text). User-defined pieces (newline, sentinels) are
    added tokens, matched in the text first as SentencePiece does."""
    from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers

    kind = model_pb2.ModelProto.SentencePiece
    names, pieces = hf_piece_names(model), model.pieces
    if model.trainer_spec.model_type == model_pb2.TrainerSpec.UNIGRAM:
        unk = next(i for i, p in enumerate(pieces) if p.type == kind.UNKNOWN)
        tokenizer = Tokenizer(models.Unigram([(name, p.score) for name, p in zip(names, pieces)], unk_id=unk,
                                             byte_fallback=True))
        unmatched = sorted({name for name, p in zip(names, pieces) if p.type not in (kind.NORMAL, kind.USER_DEFINED)})
        if any(not name.startswith("<") for name in unmatched):
            raise ValueError(f"control, unknown and byte pieces must be named <...>: {unmatched}")
        tokenizer.pre_tokenizer = pre_tokenizers.Split(
            Regex("<(?=" + "|".join(re.escape(name[1:]) for name in unmatched) + ")"), "isolated")
    else:
        normal = {name: i for i, (name, p) in enumerate(zip(names, pieces)) if p.type == kind.NORMAL}
        merges = sorted(((-pieces[i].score, i, normal[name[:k]]), (name[:k], name[k:]))
                        for name, i in normal.items() for k in range(1, len(name))
                        if name[:k] in normal and name[k:] in normal)
        tokenizer = Tokenizer(models.BPE(vocab={name: i for i, name in enumerate(names)},
                                         merges=[pair for _, pair in merges], byte_fallback=True))
    # A one-character user-defined piece (the newline) needs no added token: the model finds it.
    tokenizer.add_tokens([AddedToken(name, special=False, normalized=False) for name, p in zip(names, pieces)
                          if p.type == kind.USER_DEFINED and len(name) > 1])
    return tokenizer


def build(options: SentencePieceOptions, ctx: BuildContext) -> SentencePieceTokenizer:
    """Load ``model_file``, else the run directory's model (a resumed run), else the pretrained run's model (a
    fine-tuning run, ``ctx.init_from``), else train one; the run directory keeps a copy either way."""
    saved = ctx.run_dir / MODEL_PATH
    pretrained = ctx.init_from / MODEL_PATH if ctx.init_from is not None else None
    if options.model_file is not None:
        path = Path(options.model_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"tokenizer.model_file: {path} not found. Give the path of a SentencePiece .model file, "
                              "or leave model_file out to train a tokenizer on the training data.")
        proto, source = path.read_bytes(), f"tokenizer.model_file {path}"
        if saved.is_file() and saved.read_bytes() != proto:
            raise ConfigError(f"{source} differs from {saved}, the tokenizer this run was started with; restore "
                              "that file or start a new run.")
    elif saved.is_file():
        proto, source = saved.read_bytes(), str(saved)
    elif pretrained is not None and pretrained.is_file():
        proto, source = pretrained.read_bytes(), f"{pretrained} (the tokenizer of train.init_from)"
    else:
        proto, source = train(options, ctx.data), "the trained tokenizer"
    tokenizer = load(proto, options.num_threads, source)
    if not saved.is_file():
        _write_bytes_atomically(saved, proto)
    return tokenizer


def load(model_proto: bytes, num_threads: int, source: str) -> SentencePieceTokenizer:
    """The tokenizer of a serialized model; ConfigError naming ``source`` if it is not a usable model."""
    try:
        tokenizer = SentencePieceTokenizer(model_proto, num_threads)
    except RuntimeError:
        raise ConfigError(f"{source} is not a SentencePiece model file.") from None
    except ValueError as exc:
        raise ConfigError(f"{source} cannot be used: {exc}. Use a model trained by hookformer.") from None
    special = tokenizer.special
    if min(special.ids()) < 0 or len(special.ids()) < 7:
        raise ConfigError(f"{source} lacks special tokens: it needs pad, unk, bos and eos ids and the control "
                          f"symbols {', '.join(_CONTROL_SYMBOLS)} (got {special}). Use a model trained by hookformer.")
    if tokenizer.decode(tokenizer.encode(_PROBE)) != _PROBE:
        raise ConfigError(f"{source} does not round-trip text exactly: it must be trained with identity "
                          "normalization, byte fallback, no dummy prefix and whitespace kept. Use a model trained by "
                          "hookformer.")
    return tokenizer


def train(options: SentencePieceOptions, data: DataSource | None) -> bytes:
    """Train a model on the data's training text; returns the serialized model. Deterministic for the same text and
    options (``num_threads`` included: sentencepiece splits the work by thread, and the split changes the result)."""
    if data is None:
        raise ConfigError("the sentencepiece tokenizer needs a data stage to train on, or tokenizer.model_file.")
    # Read everything first: an exception raised inside sentencepiece's iterator loses its type (a DataError from
    # the data stage would arrive as a RuntimeError). Training holds all sentences in memory anyway.
    sentences = list(training_sentences(data.texts(), options.max_training_chars))
    if not sentences:
        raise DataError("the training data has no text to train the tokenizer on.")
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_writer=model, model_type=options.model_type,
            vocab_size=options.vocab_size, character_coverage=options.character_coverage,
            num_threads=options.num_threads, **{**_TRAINER_SETTINGS, "user_defined_symbols": [
                *_TRAINER_SETTINGS["user_defined_symbols"],
                *(f"<extra_id_{i}>" for i in range(options.sentinel_tokens))]})
    except RuntimeError as exc:
        error = _training_error(str(exc))
        if error is None:
            raise
        raise error from None
    return model.getvalue()


def training_sentences(texts: Iterable[str], max_chars: int) -> Iterator[str]:
    """Documents as training sentences: their non-empty lines, cut into chunks that sentencepiece does not skip,
    up to ``max_chars`` characters in all."""
    remaining = max_chars
    for text in texts:
        for line in text.split("\n"):  # not splitlines(): \r, \f and U+2028 are text for the model to learn
            for start in range(0, len(line), _CHUNK_CHARS):
                chunk = line[start:start + _CHUNK_CHARS][:remaining]
                yield chunk
                remaining -= len(chunk)
                if remaining == 0:
                    return


def _training_error(message: str) -> Exception | None:
    """The user's error behind a sentencepiece training failure (its messages are C++ assertion text), if known."""
    if match := re.search(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)", message):
        return DataError(
            f"the training text is too small for tokenizer.vocab_size {match[1]}: it yields at most {match[2]} "
            f"pieces. Set a smaller tokenizer.vocab_size (at most {match[2]}) or train on more text.")
    if match := re.search(r"smaller than required_chars\. (\d+) vs (\d+)", message):
        return ConfigError(
            f"tokenizer.vocab_size {match[1]} is too small: {RESERVED_IDS} ids are reserved (bytes, special tokens, "
            f"newline) and every character of the training text needs its own, {match[2]} ids in all. Set "
            f"tokenizer.vocab_size to at least {match[2]} or lower tokenizer.character_coverage.")
    return None


def _write_bytes_atomically(path: Path, content: bytes) -> None:
    """Write through a temporary file, so a crash never leaves a truncated model for a resumed run to load."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(content)
    os.replace(tmp, path)
