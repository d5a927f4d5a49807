"""What every data module shares, without torch: the options every source has, the cache directory and corpus
fingerprints (``digest`` and ``quiet_datasets`` are in :mod:`hookformer.core.datacache`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from pydantic import BaseModel, Field

from hookformer.core.datacache import digest
from hookformer.core.parts import PartOptions


class DataOptions(PartOptions):
    """Options every data source has."""

    block_size: int = Field(128, gt=1, description="tokens per training block (the model's context length)")
    val_fraction: float = Field(0.05, gt=0.0, lt=0.5,
                                description="fraction of the documents held out for validation (at least one)")
    num_proc: int = Field(1, ge=1, description="processes that run the stateless cleaning steps and tokenize")
    max_document_tokens: int | None = Field(
        None, ge=1, description="cut each tokenized document into pieces of at most this many tokens, each followed "
        "by the end-of-document token, so no training sequence spans more than one piece (null: no cut)")
    document_mask: bool = Field(False, description="give packed blocks document_ids, so that attention stays inside "
                                "each document (needs an attention kernel that supports document masks)")
    report_examples: int = Field(3, ge=0, description="examples of removed text the data report keeps per cleaning "
                                                      "step (each cut to 300 characters)")
    cache_dir: str | None = Field(None, description="where parsed corpora, cleaned documents and tokenized splits are "
                                  "cached (default: $HOOKFORMER_CACHE/data, or ~/.cache/hookformer/data)")


def refuse_unhonoured(options: BaseModel, fields: Sequence[str], why: str, fix: str) -> None:
    """ValueError (pydantic reports it at the options' path, so the config error names ``data``) naming each of
    ``fields`` that ``options`` sets to something other than its default: an option that has no effect ``why`` is
    refused rather than silently ignored; ``fix`` says what else the user can do besides removing it."""
    unhonoured = [f"{name}: {getattr(options, name)!r}" for name in fields
                  if getattr(options, name) != type(options).model_fields[name].default]
    if unhonoured:
        raise ValueError(f"data.{', data.'.join(unhonoured)} would have no effect: {why}. Remove "
                         f"{'it' if len(unhonoured) == 1 else 'them'} from data, or {fix}")


def cache_root(options: DataOptions) -> Path:
    """The data cache directory of ``options`` (created)."""
    if options.cache_dir:
        root = Path(options.cache_dir).expanduser()
    else:
        root = Path(os.environ.get("HOOKFORMER_CACHE") or Path.home() / ".cache" / "hookformer").expanduser() / "data"
    root.mkdir(parents=True, exist_ok=True)
    return root


def hf_cache(root: Path) -> str:
    """The directory given to ``datasets`` as ``cache_dir``, so nothing lands in ~/.cache/huggingface."""
    return str(root / "hf")


def files_fingerprint(files: Sequence[Path], **settings: object) -> str:
    """Content fingerprint of a corpus: its files' paths, sizes and mtimes, plus the settings that shape documents."""
    stats = [(str(path), path.stat().st_size, path.stat().st_mtime_ns) for path in files]
    return digest(stats, settings)


def held_out_split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(training, validation) indices of ``n`` items, each in ascending order: a seeded shuffle holds out
    ``round(n * fraction)`` of them for validation, at least one."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(n)
    n_validation = max(1, round(n * fraction))
    return sorted(order[n_validation:].tolist()), sorted(order[:n_validation].tolist())
