"""Data part ``pairs``: source/target pairs for sequence-to-sequence training (an encoder-decoder model, objective
``seq2seq``), from local JSON Lines, CSV, TSV or Parquet files (``source_field`` and ``target_field`` name the two
columns or fields).

Each pair becomes one example (the batch fields every seq2seq part agrees on):

- ``input_ids`` / ``attention_mask``: the source's tokens followed by the end-of-sequence token, padded;
- ``labels``: the target's tokens followed by end-of-sequence, -100 on padding;
- ``decoder_input_ids`` / ``decoder_attention_mask``: the labels shifted right, starting with the beginning-of-sequence
  token (teacher forcing: position t of the decoder sees the target up to t - 1 and predicts token t).

A source longer than ``max_source_tokens`` (its end-of-sequence token included) loses its end; a target longer than
``max_target_tokens`` likewise. The data report gives, per split, the token lengths of both sides before truncation
(mean, median, 95th percentile, longest) and how many were cut. A missing column and an empty source or target
(nothing but whitespace) are errors naming the file and the record. Records are split into training and validation by
a seeded shuffle. Tables are padded to the longest example of their split, not to the maximum.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from pydantic import Field

from hookformer.core.datacache import quiet_datasets
from hookformer.core.errors import DataError
from hookformer.core.parts import BuildContext, PartOptions, SpecialTokens, Tokenizer
from hookformer.plugins.data.common import cache_root, held_out_split, hf_cache
from hookformer.plugins.data.tabular import first_bad_record, record_format
from hookformer.plugins.data.text_files import resolve_paths

IGNORE = -100
_ENCODE_BATCH = 4096
SIDES = ("source", "target")


class PairsOptions(PartOptions):
    paths: list[str] = Field(min_length=1, description="files or glob patterns (** matches any depth), relative to "
                             "the working directory")
    format: Literal["auto", "jsonl", "csv", "tsv", "parquet"] = Field(
        "auto", description="auto: by suffix (.jsonl/.json, .csv, .tsv/.tab, .parquet); CSV and TSV files have a "
        "header row")
    source_field: str = Field("source", description="the column (field) holding the source text (encoder input)")
    target_field: str = Field("target", description="the column (field) holding the target text (decoder output)")
    max_source_tokens: int = Field(128, ge=2, le=1_000_000, description="longest source, its end-of-sequence token "
                                   "included; longer ones lose their end")
    max_target_tokens: int = Field(64, ge=2, le=1_000_000, description="longest target, its end-of-sequence token "
                                   "included; longer ones lose their end")
    val_fraction: float = Field(0.05, gt=0.0, lt=0.5, description="share of the pairs held out for validation "
                                "(seeded, at least one)")
    cache_dir: str | None = Field(None, description="where `datasets` caches the parsed files (default: "
                                  "$HOOKFORMER_CACHE/data, or ~/.cache/hookformer/data)")


@dataclass
class Pairs:
    """The texts of one split: ``sources[i]`` is translated into ``targets[i]``."""

    sources: list[str]
    targets: list[str]


class PairsSource:
    """A :class:`~hookformer.core.parts.DataSource` of seq2seq examples (see the module docstring) from the texts of
    each split; ``report`` is extended with lengths and truncations when the splits are tokenized."""

    def __init__(self, splits: dict[str, Pairs], *, max_source_tokens: int, max_target_tokens: int, report: dict):
        for split in ("train", "validation"):
            if not splits.get(split) or not splits[split].sources:
                raise DataError(f"the {split} split has no pairs: give more records (or a larger data.val_fraction)")
        self._splits = splits
        self.max_source_tokens, self.max_target_tokens = max_source_tokens, max_target_tokens
        # The model's context must hold the longer side (an encoder-decoder takes its positions from it).
        self.block_size = max(max_source_tokens, max_target_tokens)
        self.report = {**report, "pairs": {split: len(pairs.sources) for split, pairs in splits.items()},
                       "max_source_tokens": max_source_tokens, "max_target_tokens": max_target_tokens}

    def texts(self) -> Iterator[str]:
        """Training sources and targets (to train a tokenizer); validation texts are never among them."""
        train = self._splits["train"]
        for source, target in zip(train.sources, train.targets):
            yield source
            yield target

    def pairs(self, split: str) -> Pairs:
        """The texts of ``split`` (``train`` or ``validation``), in table order."""
        return self._splits[split]

    def prepare(self, tokenizer: Tokenizer) -> dict[str, dict[str, torch.Tensor]]:
        tables, lengths = {}, {}
        for split, pairs in self._splits.items():
            sources, targets = _encode(tokenizer, pairs.sources), _encode(tokenizer, pairs.targets)
            tables[split] = seq2seq_table(sources, targets, tokenizer.special, self.max_source_tokens,
                                          self.max_target_tokens)
            lengths[split] = {"source": length_summary(sources, self.max_source_tokens - 1),
                              "target": length_summary(targets, self.max_target_tokens - 1)}
        self.report.update(tokenizer=tokenizer.fingerprint(), lengths=lengths)
        return tables


def seq2seq_table(sources: list[list[int]], targets: list[list[int]], special: SpecialTokens, max_source_tokens: int,
                  max_target_tokens: int) -> dict[str, torch.Tensor]:
    """The examples table (or batch) of tokenized pairs (fields in the module docstring), each side cut to its
    maximum with its end-of-sequence token kept, padded to the longest example. The denoising objectives build
    their batches with it too."""
    encoder = [[*ids[:max_source_tokens - 1], special.eos] for ids in sources]
    labels = [[*ids[:max_target_tokens - 1], special.eos] for ids in targets]
    input_ids, attention_mask = _padded(encoder, special.pad)
    label_ids, decoder_attention_mask = _padded(labels, IGNORE)
    decoder_input_ids, _ = _padded([[special.bos, *ids[:-1]] for ids in labels], special.pad)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "decoder_input_ids": decoder_input_ids,
            "decoder_attention_mask": decoder_attention_mask, "labels": label_ids}


def _padded(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, :len(row)] = 1
    return ids, mask


def length_summary(sequences: list[list[int]], kept: int) -> dict:
    """Token lengths before truncation (mean, median, 95th percentile, longest) and how many exceed ``kept``."""
    lengths = np.array([len(ids) for ids in sequences])
    return {"mean": round(float(lengths.mean()), 1), "p50": int(np.percentile(lengths, 50)),
            "p95": int(np.percentile(lengths, 95)), "max": int(lengths.max()),
            "truncated": int((lengths > kept).sum())}


def _encode(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [ids for start in range(0, len(texts), _ENCODE_BATCH)
            for ids in tokenizer.encode_batch(texts[start:start + _ENCODE_BATCH])]


def split_pairs(pairs: Pairs, val_fraction: float, seed: int) -> dict[str, Pairs]:
    """A seeded shuffle into training and validation (at least one pair held out), each in file order."""
    kept, held_out = held_out_split(len(pairs.sources), val_fraction, seed)
    return {split: Pairs([pairs.sources[i] for i in chosen], [pairs.targets[i] for i in chosen])
            for split, chosen in (("train", kept), ("validation", held_out))}


def read_pairs(path: Path, fmt: str, options: PairsOptions, root: Path) -> Pairs:
    """One file's pairs. DataError naming the file (and the record) for a missing column, a value that is not text
    and an empty side."""
    fields = {"source": options.source_field, "target": options.target_field}
    if fmt == "jsonl":
        table = _read_jsonl(path, fields, root)
    elif fmt == "parquet":
        table = _read_parquet(path, fields, root)
    else:
        with quiet_datasets():  # each cell's text as written: no number parsing, no empty cell as NaN
            table = datasets.load_dataset("csv", data_files=[str(path)], split="train", cache_dir=hf_cache(root),
                                          delimiter="\t" if fmt == "tsv" else ",", keep_default_na=False,
                                          converters={field: str for field in fields.values()})
        _check_columns(path, table.column_names, fields)
    columns = {side: table[field] for side, field in fields.items()}
    for side, field in fields.items():
        for number, text in enumerate(columns[side], 1):
            if not text.strip():
                where = f"line {number}" if fmt == "jsonl" else f"record {number}"
                raise DataError(f'{path}, {where}: the {side} (data.{side}_field "{field}") is empty; every pair '
                                f"needs a non-empty source and target. Fill it in or remove the record.")
    return Pairs(columns["source"], columns["target"])


def _check_columns(path: Path, columns: list[str], fields: dict[str, str]) -> None:
    missing = [f'"{field}" (data.{side}_field)' for side, field in fields.items() if field not in columns]
    if missing:
        raise DataError(f"{path} has no column {' or '.join(missing)}; its columns are: "
                        f"{', '.join(columns) or 'none'}. Set data.source_field and data.target_field to the "
                        f"columns that hold the two sides.")


def _read_jsonl(path: Path, fields: dict[str, str], root: Path) -> datasets.Dataset:
    try:
        with quiet_datasets():
            table = datasets.load_dataset("json", data_files=[str(path)], split="train", cache_dir=hf_cache(root))
    except (datasets.exceptions.DatasetGenerationError, pa.ArrowInvalid, ValueError) as exc:
        raise DataError(first_bad_record([path], fields["source"]) or f"cannot read {path} as JSON Lines: "
                        f"{exc}") from None
    _check_columns(path, table.column_names, fields)
    for side, field in fields.items():
        column_type = table.data.schema.field(field).type
        if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)) \
                or table.data[field].null_count:
            reason = first_bad_record([path], field) or f'some records have no text field "{field}"'
            raise DataError(reason.replace("data.text_field", f"data.{side}_field"))
    return table


def _read_parquet(path: Path, fields: dict[str, str], root: Path) -> datasets.Dataset:
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path} is not a readable Parquet file ({exc}).") from None
    _check_columns(path, schema.names, fields)
    for side, field in fields.items():
        column_type = schema.field(field).type
        if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)):
            raise DataError(f'{path}: column "{field}" (data.{side}_field) holds {column_type}, not text.')
    with quiet_datasets():
        table = datasets.load_dataset("parquet", data_files=[str(path)], split="train", cache_dir=hf_cache(root),
                                      columns=list(dict.fromkeys(fields.values())))
    for side, field in fields.items():
        if table.data[field].null_count:
            row = table[field].index(None) + 1
            raise DataError(f'{path}, record {row}: the {side} (data.{side}_field "{field}") is null; every pair '
                            f"needs a non-empty source and target.")
    return table


def _format(path: Path, option: str) -> str:
    if option == "parquet" or (option == "auto" and path.suffix.lower() == ".parquet"):
        return "parquet"
    return record_format(path, option)


def build(options: PairsOptions, ctx: BuildContext) -> PairsSource:
    files = [path for path in resolve_paths(options.paths) if path.stat().st_size]
    if not files:
        raise DataError(f"data.paths: {', '.join(options.paths)} match no non-empty file.")
    root = cache_root(options)
    read = [read_pairs(path, _format(path, options.format), options, root) for path in files]
    pairs = Pairs([text for part in read for text in part.sources], [text for part in read for text in part.targets])
    if len(pairs.sources) < 2:
        raise DataError(f"{', '.join(map(str, files))} hold {len(pairs.sources)} pair(s): at least two are needed, "
                        f"one for training and one for validation")
    report = {"source": "pairs", "files": [str(path) for path in files],
              "bytes": sum(path.stat().st_size for path in files)}
    return PairsSource(split_pairs(pairs, options.val_fraction, ctx.seed), max_source_tokens=options.max_source_tokens,
                       max_target_tokens=options.max_target_tokens, report=report)
