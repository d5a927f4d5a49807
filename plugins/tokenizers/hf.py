"""Tokenizer part ``hf_tokenizer``: a Hugging Face ``tokenizer.json`` (byte-level BPE as in GPT-2 and Llama 3,
WordPiece as in BERT, ...) run by the ``tokenizers`` library, with its ids unchanged.

Encoding adds no special tokens (the data parts add those they need) and decoding drops them. The run keeps the
files under ``RUN_DIR/tokenizer/`` (``tokenizer.json``, and ``tokenizer_config.json`` when the source has one), and
reloads them from there, then from ``train.init_from``'s run, before reading ``path``.

Special tokens: those ``tokenizer_config.json`` names (``bos_token``, ``eos_token``, ...), else the first of the
usual names (:data:`KNOWN`) that the vocabulary holds. A role still missing reuses another role's id
(:data:`REUSE`: pad, unk and sep take eos, cls takes bos, mask takes unk); a tokenizer with neither bos nor eos is
refused.
"""

from __future__ import annotations

import json
from hashlib import sha256
from pathlib import Path
from typing import Iterable

from pydantic import Field
from tokenizers import Tokenizer

from hookformer.core.checkpoint import write_atomically
from hookformer.core.errors import ConfigError
from hookformer.core.parts import BuildContext, PartOptions, SpecialTokens

FOLDER = Path("tokenizer")
JSON = "tokenizer.json"
CONFIG = "tokenizer_config.json"

#: The usual names of each role's token, most specific first.
KNOWN = {
    "bos": ("<|begin_of_text|>", "<s>", "<|endoftext|>", "[CLS]"),
    "eos": ("<|end_of_text|>", "</s>", "<|endoftext|>", "[SEP]"),
    "pad": ("<pad>", "[PAD]", "<|pad|>"),
    "unk": ("<unk>", "[UNK]"),
    "mask": ("<mask>", "[MASK]"),
    "cls": ("[CLS]", "<cls>"),
    "sep": ("[SEP]", "<sep>"),
}
#: The role whose id a missing role reuses, in the order they are filled.
REUSE = {"bos": "eos", "eos": "bos", "pad": "eos", "unk": "eos", "cls": "bos", "sep": "eos", "mask": "unk"}


class HFTokenizerOptions(PartOptions):
    path: str | None = Field(None, description="a tokenizer.json, or a directory holding one (and maybe a "
                             "tokenizer_config.json naming the special tokens); null: the run's own copy "
                             "(RUN_DIR/tokenizer) or train.init_from's")


class HFTokenizer:
    """A ``tokenizers.Tokenizer`` with the :class:`~hookformer.core.parts.Tokenizer` interface."""

    def __init__(self, files: dict[str, bytes], source: str):
        self.files = files
        try:
            self._tok = Tokenizer.from_str(files[JSON].decode("utf-8"))
            settings = json.loads(files[CONFIG]) if CONFIG in files else {}
        except Exception as exc:  # the library raises plain Exceptions for every malformed file
            raise ConfigError(f"{source} is not a usable Hugging Face tokenizer: {exc}.") from None
        vocab = self._tok.get_vocab(with_added_tokens=True)
        self.vocab_size: int = max(vocab.values()) + 1
        self.special = _special_tokens(vocab, settings, source)
        self._special_ids = frozenset(i for i, t in self._tok.get_added_tokens_decoder().items() if t.special)
        # The special ids are in it too: the data parts insert them, so cached data depends on them.
        self._fingerprint = "hf-" + sha256(files[JSON] + repr(self.special).encode()).hexdigest()[:16]

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """``encode(text)`` and the library's offsets: character spans of the text (a byte-level token holding part of
        a character covers that character; a token may include the space before a word)."""
        encoding = self._tok.encode(text, add_special_tokens=False)
        return encoding.ids, [tuple(span) for span in encoding.offsets]

    def decode(self, ids: Iterable[int]) -> str:
        """Ids back to text; special and out-of-range ids are dropped."""
        return self._tok.decode([i for i in map(int, ids) if 0 <= i < self.vocab_size and i not in self._special_ids])

    def fingerprint(self) -> str:
        return self._fingerprint

    def save_hf(self, folder: Path) -> None:
        """Write the files in Hugging Face's layout (``hookformer export``); a tokenizer_config.json naming the
        special tokens is written when the source had none, so that AutoTokenizer finds them."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / JSON).write_bytes(self.files[JSON])
        settings = json.loads(self.files[CONFIG]) if CONFIG in self.files else {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **{f"{role}_token": self._tok.id_to_token(getattr(self.special, role)) for role in KNOWN}}
        (folder / CONFIG).write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    def __getstate__(self) -> dict:
        return {"files": self.files, "source": "a pickled tokenizer"}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["files"], state["source"])


def _token_name(value) -> str | None:
    """A tokenizer_config.json entry: a string, or an AddedToken dict with its ``content``."""
    return value.get("content") if isinstance(value, dict) else value


def _special_tokens(vocab: dict[str, int], settings: dict, source: str) -> SpecialTokens:
    ids: dict[str, int | None] = {}
    for role, names in KNOWN.items():
        named = _token_name(settings.get(f"{role}_token"))
        candidates = (named,) if named is not None else names
        ids[role] = next((vocab[name] for name in candidates if name in vocab), None)
    for role, fallback in REUSE.items():
        if ids[role] is None:
            ids[role] = ids[fallback]
    if ids["bos"] is None:
        raise ConfigError(f"{source} has no bos or eos token (looked for {', '.join(KNOWN['bos'] + KNOWN['eos'])}, "
                          f"or bos_token/eos_token in {CONFIG}); hookformer needs one to mark documents.")
    return SpecialTokens(**ids)


def _read(folder: Path, json_file: Path) -> dict[str, bytes]:
    files = {JSON: json_file.read_bytes()}
    if (folder / CONFIG).is_file():
        files[CONFIG] = (folder / CONFIG).read_bytes()
    return files


def build(options: HFTokenizerOptions, ctx: BuildContext) -> HFTokenizer:
    """The run's copy, else ``train.init_from``'s, else ``path``'s files (copied into the run)."""
    saved = ctx.run_dir / FOLDER
    pretrained = ctx.init_from / FOLDER if ctx.init_from is not None else None
    if (saved / JSON).is_file():
        files, source = _read(saved, saved / JSON), str(saved / JSON)
    elif pretrained is not None and (pretrained / JSON).is_file():
        files, source = _read(pretrained, pretrained / JSON), f"{pretrained / JSON} (the tokenizer of train.init_from)"
    elif options.path is not None:
        path = Path(options.path).expanduser()
        json_file = path / JSON if path.is_dir() else path
        if not json_file.is_file():
            raise ConfigError(f"tokenizer.path: {json_file} not found; give a tokenizer.json or the directory of one.")
        files, source = _read(json_file.parent, json_file), f"tokenizer.path {json_file}"
    else:
        raise ConfigError("tokenizer: hf_tokenizer needs path (a tokenizer.json or its directory), or a run with "
                          "its copy (RUN_DIR/tokenizer/tokenizer.json).")
    tokenizer = HFTokenizer(files, source)
    if not (saved / JSON).is_file():
        saved.mkdir(parents=True, exist_ok=True)
        for name in sorted(files, key=lambda name: name == JSON):  # tokenizer.json last: it marks a complete copy
            write_atomically(saved / name, files[name].decode("utf-8"))
    return tokenizer
