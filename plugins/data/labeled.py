"""Data part ``labeled``: labeled examples for fine-tuning, from local CSV, TSV and JSON Lines files read with
`datasets`.

Two tasks. ``sequence_classification``: a text (and optionally a second text) and one label per record; each becomes
``[cls] text [sep]``, or ``[cls] text [sep] pair [sep]`` with ``token_type_ids`` 0 on the first segment and 1 on the
second. ``token_classification``: a list of words and a list of tags of the same length per record; each word is
tokenized on its own (after the first, with a leading space, as in running text), its first sub-word piece gets the
tag and the other pieces get -100 (not scored), as do the special tokens and the padding. A piece that is only the
leading space (the byte tokenizer spells it on its own) is not the word's: the tag goes on the next piece.

Labels are class names or integers; the label ids follow the sorted training labels (integers sorted as numbers), so
the mapping depends on the training files only, never on their order. Every validation label must occur in the
training files. Sequences longer than ``max_length`` tokens (special tokens included) are truncated and counted in
the data report; a pair is truncated from its longer text first.

Cleaning: sequence classification runs the run's ``cleaning`` steps over every record's text (and pair) after the
split, the training records first: each text counts as a document in the report's ``cleaning`` table, edits apply to
the text, and a record is dropped when a step removes its text or its pair. Token classification refuses a
``cleaning`` section (a ConfigError): its records are lists of words with one tag each, and a step that edits text
would break their alignment; clean the files before.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Sequence

import datasets
import numpy as np
import torch
from pydantic import Field, model_validator

from hookformer.core.cleaning import CleaningChain
from hookformer.core.datacache import quiet_datasets
from hookformer.core.errors import ConfigError, DataError
from hookformer.core.parts import BuildContext, Cleaner, PartOptions, Tokenizer
from hookformer.plugins.data.common import cache_root, held_out_split, hf_cache
from hookformer.plugins.data.tabular import record_format
from hookformer.plugins.data.text_files import resolve_paths

IGNORE = -100
Task = Literal["sequence_classification", "token_classification"]
#: The fields read when text_field / label_field are left null.
DEFAULT_FIELDS = {"sequence_classification": ("text", "label"), "token_classification": ("tokens", "tags")}
_INTEGER = re.compile(r"-?\d+")


class LabeledOptions(PartOptions):
    task: Task = Field("sequence_classification", description="sequence_classification: one label per record; "
                       "token_classification: one tag per word")
    train_files: list[str] = Field(min_length=1, description="training files or glob patterns (.csv, .tsv, .jsonl)")
    validation_files: list[str] = Field([], description="validation files or glob patterns; none: val_fraction "
                                        "of the training records is held out")
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5, description="without validation_files: share of the training "
                                "records held out for validation (seeded, at least one)")
    format: Literal["auto", "csv", "tsv", "jsonl"] = Field("auto", description="auto: by file suffix (.csv, .tsv "
                                                           "or .tab, .jsonl or .json)")
    text_field: str | None = Field(None, description="the column holding the text (token classification: the list "
                                   "of words); null: text, or tokens for token classification")
    text_pair_field: str | None = Field(None, description="sequence classification: a column holding a second text "
                                        "(sentence pairs); null: single texts")
    label_field: str | None = Field(None, description="the column holding the label (token classification: the "
                                    "list of tags); null: label, or tags for token classification")
    max_length: int = Field(128, ge=4, description="tokens per example, special tokens included (the model's "
                            "context length); longer examples are truncated")
    segment_ids: bool = Field(True, description="sentence pairs: give the model token_type_ids (needs "
                              "model.type_vocab_size: 2); false for a model without segment embeddings (the [sep] "
                              "token still separates the texts)")
    space_before_words: bool = Field(True, description="token classification: tokenize each word after the first "
                                     "with a leading space, as in running text (the pieces pretraining saw); false: "
                                     "each word exactly as written")
    report_examples: int = Field(3, ge=0, description="examples of removed text the data report keeps per cleaning "
                                 "step (each cut to 300 characters)")
    cache_dir: str | None = Field(None, description="where `datasets` caches the parsed files (default: "
                                  "$HOOKFORMER_CACHE/data, or ~/.cache/hookformer/data)")

    @model_validator(mode="after")
    def _pairs_are_sentences(self):
        if self.text_pair_field is not None and self.task != "sequence_classification":
            raise ValueError("text_pair_field is for task sequence_classification")
        return self


@dataclass
class Examples:
    """The examples of one split: ``texts`` (strings, or lists of words for token classification), ``labels`` (a
    label id per example, or a list of tag ids per word) and, for sentence pairs, the second ``pairs``."""

    texts: list
    labels: list
    pairs: list[str] | None = None


@dataclass
class Record:
    """A labeled record as read, and where it comes from (for error messages)."""

    text: object
    label: object
    pair: object
    source: tuple[Path, int, str]  # (file, record index in the file, format)


class LabeledSource:
    """A :class:`~hookformer.core.parts.DataSource` of labeled examples (see the module docstring): ``prepare``
    returns examples tables with ``input_ids``, ``attention_mask``, ``labels`` and, for sentence pairs with segment
    ids, ``token_type_ids``; ``label_names`` are the class names by label id. ``cleaners`` (``ctx.cleaners``) clean the
    texts of sequence classification (see the module docstring)."""

    applies_cleaning = True

    def __init__(self, task: Task, splits: dict[str, Examples], label_names: list[str], *, max_length: int,
                 segment_ids: bool = True, space_before_words: bool = True, report: dict | None = None,
                 cleaners: Sequence[Cleaner] = (), report_examples: int = 3):
        if cleaners and task == "token_classification":
            raise ConfigError("cleaning: the labeled data part with task token_classification cannot be cleaned: its "
                              "records are lists of words with one tag each, and a step that edits text would break "
                              "the alignment of words and tags. Remove the cleaning section (clean the files before), "
                              "or use task sequence_classification")
        chain = CleaningChain(cleaners, examples=report_examples)
        splits = {name: clean_examples(chain, examples, name) for name, examples in splits.items()}
        self.task = task
        self.splits = splits
        self.label_names = label_names
        self.block_size = max_length
        self.segment_ids = segment_ids
        self.space_before_words = space_before_words
        counts = {name: np.bincount(np.asarray(_flat_labels(examples.labels), dtype=np.int64),
                                    minlength=len(label_names)).tolist()
                  for name, examples in splits.items()}
        self.report = {**(report or {}), "task": task, "max_length": max_length, "cleaning": chain.report(),
                       "examples": {name: len(examples.texts) for name, examples in splits.items()},
                       "label_names": label_names,
                       "label_counts": {name: dict(zip(label_names, c)) for name, c in counts.items()}}

    def texts(self) -> Iterator[str]:
        """The training texts (to train a tokenizer): each text and pair; the words of a record joined by spaces."""
        train = self.splits["train"]
        for i, text in enumerate(train.texts):
            yield text if isinstance(text, str) else " ".join(text)
            if train.pairs is not None:
                yield train.pairs[i]

    def prepare(self, tokenizer: Tokenizer) -> dict[str, dict[str, torch.Tensor]]:
        tables, truncated = {}, {}
        for name, examples in self.splits.items():
            if self.task == "token_classification":
                tables[name], truncated[name] = encode_words(tokenizer, examples.texts, examples.labels,
                                                             self.block_size, self.space_before_words)
            else:
                tables[name], truncated[name] = encode_sequences(tokenizer, examples.texts, examples.pairs,
                                                                 examples.labels, self.block_size, self.segment_ids)
        self.report.update(tokenizer=tokenizer.fingerprint(), truncated=truncated)
        return tables


def clean_examples(chain: CleaningChain, examples: Examples, split: str) -> Examples:
    """``examples`` of sequence classification through ``chain``: texts (and pairs) cleaned, a record dropped when a
    step removes its text or its pair. DataError when none is left."""
    columns = [examples.texts] if examples.pairs is None else [examples.texts, examples.pairs]
    kept, cleaned = chain.clean_records(columns, what=f"{split} record")
    return Examples(cleaned[0], [examples.labels[i] for i in kept], None if examples.pairs is None else cleaned[1])


def _flat_labels(labels: list) -> list[int]:
    return [tag for tags in labels for tag in tags] if labels and isinstance(labels[0], list) else labels


# -- encoding --------------------------------------------------------------------------------------------------------

def fit_pair(length_a: int, length_b: int, room: int) -> tuple[int, int]:
    """How many tokens of each text of a pair to keep in ``room``: shorten the longer one first (on a tie, the
    second), so a text shorter than half the room is kept whole."""
    if length_a + length_b <= room:
        return length_a, length_b
    keep_a = min(length_a, max(room - length_b, (room + 1) // 2))
    return keep_a, min(length_b, room - keep_a)


def _table(rows: list[list[int]], max_length: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ids padded to (N, max_length) with ``pad``, and the attention mask (1 on real tokens)."""
    ids = np.full((len(rows), max_length), pad, dtype=np.int64)
    mask = np.zeros((len(rows), max_length), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = row
        mask[i, :len(row)] = 1
    return ids, mask


def encode_sequences(tokenizer: Tokenizer, texts: list[str], pairs: list[str] | None, labels: list[int],
                     max_length: int, segment_ids: bool = True) -> tuple[dict[str, torch.Tensor], int]:
    """``[cls] text [sep]`` (or ``[cls] text [sep] pair [sep]``) per example, truncated to ``max_length``. Returns the
    examples table and the number of examples truncated."""
    special = tokenizer.special
    first = tokenizer.encode_batch(texts)
    second = tokenizer.encode_batch(pairs) if pairs is not None else None
    rows, first_lengths, truncated = [], [], 0
    for i, a in enumerate(first):
        if second is None:
            keep_a, keep_b = min(len(a), max_length - 2), 0
            truncated += keep_a < len(a)
            rows.append([special.cls, *a[:keep_a], special.sep])
        else:
            b = second[i]
            keep_a, keep_b = fit_pair(len(a), len(b), max_length - 3)
            truncated += keep_a + keep_b < len(a) + len(b)
            rows.append([special.cls, *a[:keep_a], special.sep, *b[:keep_b], special.sep])
        first_lengths.append(keep_a + 2)
    ids, mask = _table(rows, max_length, special.pad)
    table = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
             "labels": torch.tensor(labels, dtype=torch.long)}
    if second is not None and segment_ids:
        second_segment = np.arange(max_length)[None, :] >= np.array(first_lengths)[:, None]
        table["token_type_ids"] = torch.from_numpy((second_segment & mask.astype(bool)).astype(np.int64))
    return table, truncated


def encode_words(tokenizer: Tokenizer, words: list[list[str]], tags: list[list[int]], max_length: int,
                 space_before_words: bool = True) -> tuple[dict[str, torch.Tensor], int]:
    """``[cls] pieces of each word [sep]`` per example, with each word's tag on its first piece (a leading piece that
    is only whitespace excepted) and -100 on every other position, truncated to ``max_length``. Returns the examples
    table and the number of examples truncated."""
    special = tokenizer.special
    spelled = [f" {word}" if j and space_before_words else word for record in words for j, word in enumerate(record)]
    pieces = iter(tokenizer.encode_batch(spelled))
    blank: dict[int, bool] = {}  # piece id -> it decodes to whitespace only

    def first_of_word(word_pieces: list[int]) -> int:
        head = word_pieces[0]
        if head not in blank:
            blank[head] = not tokenizer.decode([head]).strip()
        return 1 if blank[head] and len(word_pieces) > 1 else 0

    rows, label_rows, truncated = [], [], 0
    for record_tags in tags:
        ids, labels = [special.cls], [IGNORE]
        for tag in record_tags:
            word_pieces = next(pieces)
            ids.extend(word_pieces)
            if word_pieces:  # a word that encodes to nothing (an empty string) has no piece to label
                first = first_of_word(word_pieces)
                labels.extend([IGNORE] * first + [tag] + [IGNORE] * (len(word_pieces) - first - 1))
        truncated += len(ids) > max_length - 1
        rows.append([*ids[:max_length - 1], special.sep])
        label_rows.append([*labels[:max_length - 1], IGNORE])
    ids, mask = _table(rows, max_length, special.pad)
    label_table, _ = _table(label_rows, max_length, IGNORE)
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
            "labels": torch.from_numpy(label_table)}, truncated


# -- reading ---------------------------------------------------------------------------------------------------------


def load_file(path: Path, fmt: str, root: Path) -> datasets.Dataset:
    """One CSV, TSV or JSON Lines file as a Dataset (CSV cells stay text; an empty cell is an empty string)."""
    kwargs = {"sep": "\t" if fmt == "tsv" else ",", "keep_default_na": False} if fmt != "jsonl" else {}
    try:
        with quiet_datasets():
            return datasets.load_dataset("json" if fmt == "jsonl" else "csv", data_files=[str(path)], split="train",
                                         cache_dir=hf_cache(root), **kwargs)
    except Exception as exc:  # noqa: BLE001 - `datasets` and its readers raise many kinds; each means a bad file
        raise DataError(f"cannot read {path} as {fmt.upper()}: {str(exc).splitlines()[0] if str(exc) else exc}. "
                        f"Check the file (and data.format).") from None


def line_of(path: Path, fmt: str, index: int) -> int:
    """Error path only: the line of the file on which record ``index`` (0-based) starts; blank lines are not
    records, and a CSV header is the line before the first."""
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        if fmt == "jsonl":
            lines = (n for n, line in enumerate(handle, 1) if line.strip())
            return next(n for i, n in enumerate(lines) if i == index)
        reader = csv.reader(handle, delimiter="\t" if fmt == "tsv" else ",")
        start, records = 1, -1  # the header is record -1
        while True:
            row = next(reader, None)
            if row is None or (row and records == index):
                return start
            records += bool(row)
            start = reader.line_num + 1


def located(record: Record) -> str:
    path, index, fmt = record.source
    return f"{path}, line {line_of(path, fmt, index)}"


def read_records(patterns: list[str], options: LabeledOptions, option: str, root: Path) -> tuple[list[Record],
                                                                                                  list[Path]]:
    """Every record of the files named by ``patterns`` (the option ``option``), in file order."""
    text_field, label_field = fields(options)
    wanted = {text_field: "text_field", label_field: "label_field"}
    if options.text_pair_field is not None:
        wanted[options.text_pair_field] = "text_pair_field"
    files = resolve_paths(patterns, field=f"data.{option}")
    records = []
    for path in files:
        fmt = record_format(path, options.format)
        loaded = load_file(path, fmt, root)
        for column, name in wanted.items():
            if column not in loaded.column_names:
                raise DataError(f'{path}: no column "{column}" (data.{name}); its columns are: '
                                f"{', '.join(loaded.column_names) or 'none'}. Set data.{name} to the column that "
                                f"holds the {'label' if name == 'label_field' else 'text'}.")
        pairs = loaded[options.text_pair_field] if options.text_pair_field else [None] * len(loaded)
        for index, (text, label, pair) in enumerate(zip(loaded[text_field], loaded[label_field], pairs)):
            records.append(Record(text, label, pair, (path, index, fmt)))
    return records, files


def fields(options: LabeledOptions) -> tuple[str, str]:
    """(text field, label field) of ``options``, defaults filled in."""
    text_default, label_default = DEFAULT_FIELDS[options.task]
    return options.text_field or text_default, options.label_field or label_default


def label_key(value: object) -> str | None:
    """A label as a class name: integers and text alike; None for an empty label."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return str(value)


def label_order(keys: set[str]) -> list[str]:
    """Class names in label-id order: sorted, as numbers when every name is an integer."""
    if all(_INTEGER.fullmatch(key) for key in keys):
        return sorted(keys, key=int)
    return sorted(keys)


def record_labels(record: Record, options: LabeledOptions) -> list[str]:
    """The record's label (or tags) as class names, checked: present, and one tag per word."""
    text_field, label_field = fields(options)
    if options.task == "sequence_classification":
        for column, value in ((text_field, record.text), (options.text_pair_field, record.pair)):
            if column is not None and not isinstance(value, (str, int, float)):
                raise DataError(f'{located(record)}: field "{column}" holds no text (got {value!r})')
        key = label_key(record.label)
        if key is None:
            raise DataError(f'{located(record)}: empty label (field "{label_field}", data.label_field); give every '
                            f"record a label or remove the record")
        return [key]
    if not isinstance(record.text, list) or not isinstance(record.label, list):
        raise DataError(f'{located(record)}: token classification needs a list of words in "{text_field}" and a list '
                        f'of tags in "{label_field}" (JSON Lines: {{"{text_field}": ["Ada", "wrote"], '
                        f'"{label_field}": ["B-PER", "O"]}})')
    if len(record.text) != len(record.label):
        raise DataError(f'{located(record)}: {len(record.text)} words in "{text_field}" but {len(record.label)} tags in '
                        f'"{label_field}"; give exactly one tag per word')
    keys = [label_key(tag) for tag in record.label]
    if None in keys:
        raise DataError(f'{located(record)}: word {keys.index(None) + 1} has an empty tag (field "{label_field}")')
    return keys


def to_examples(records: list[Record], keys: list[list[str]], ids: dict[str, int], options: LabeledOptions,
                train_files: list[Path]) -> Examples:
    """Records with their class names turned into label ids; a name not among ``ids`` is an error."""
    labels = []
    for record, record_keys in zip(records, keys):
        unknown = next((key for key in record_keys if key not in ids), None)
        if unknown is not None:
            raise DataError(f'{located(record)}: label "{unknown}" never occurs in the training files '
                            f"({', '.join(map(str, train_files))}), so the classifier has no class for it. The "
                            f"training labels are: {', '.join(ids)}. Fix the label or add training examples of it.")
        label_ids = [ids[key] for key in record_keys]
        labels.append(label_ids if options.task == "token_classification" else label_ids[0])
    texts = [record.text if isinstance(record.text, list) else str(record.text) for record in records]
    pairs = [str(record.pair) for record in records] if options.text_pair_field else None
    return Examples(texts, labels, pairs)


def build(options: LabeledOptions, ctx: BuildContext) -> LabeledSource:
    root = cache_root(options)
    train, train_files = read_records(options.train_files, options, "train_files", root)
    if options.validation_files:
        validation, validation_files = read_records(options.validation_files, options, "validation_files", root)
    else:
        if len(train) < 2:
            raise DataError(f"the training files ({', '.join(map(str, train_files))}) hold {len(train)} record(s): at "
                            f"least two are needed to hold one out for validation, or set data.validation_files")
        kept, held_out = held_out_split(len(train), options.val_fraction, ctx.seed)
        train, validation = [train[i] for i in kept], [train[i] for i in held_out]
        validation_files = []
    train_keys = [record_labels(record, options) for record in train]
    validation_keys = [record_labels(record, options) for record in validation]
    # Held-out records are part of the training files: their labels count as seen there.
    seen = {key for keys in train_keys + ([] if options.validation_files else validation_keys) for key in keys}
    names = label_order(seen)
    ids = {name: i for i, name in enumerate(names)}
    splits = {"train": to_examples(train, train_keys, ids, options, train_files),
              "validation": to_examples(validation, validation_keys, ids, options, train_files)}
    report = {"source": "labeled", "files": {"train": [str(p) for p in train_files],
                                             "validation": [str(p) for p in validation_files]}}
    return LabeledSource(options.task, splits, names, max_length=options.max_length,
                         segment_ids=options.segment_ids, space_before_words=options.space_before_words, report=report,
                         cleaners=ctx.cleaners, report_examples=options.report_examples)
