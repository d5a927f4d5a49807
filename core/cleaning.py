"""The cleaning chain: a run's ``cleaning`` steps (``BuildContext.cleaners``, built in config order) applied to a
data part's documents, counting what each step kept, removed and changed. It is the engine's public API for cleaning:
a data part, built-in or third-party, builds ``CleaningChain(ctx.cleaners, examples=...)`` and runs its texts
through it; it only relies on the :class:`~hookformer.core.parts.Cleaner` protocol.

``applies_cleaning``: a data source object whose part runs its texts through the chain sets the class attribute
``applies_cleaning = True`` and puts ``chain.report()`` in its data report as ``report["cleaning"]`` (what
``hookformer data`` prints). The engine refuses a non-empty ``cleaning:`` section for a data part whose built source
does not declare it, rather than letting the steps go silently unapplied. Every built-in data part declares it.

Two ways to run the same chain, with the same rules and the same counts:

- ``chain.apply(documents, ...)``: a documents ``Dataset`` (one ``text`` column) -> the cleaned ``Dataset``, cached
  on disk under a fingerprint of the source and every step, so a second run reads the result instead of cleaning;
- ``chain.clean_batch(texts)``: a list of texts -> the texts kept, cleaned; for sources that stream their documents
  batch by batch (call ``chain.check_kept_some()`` once the stream ends);
- ``chain.clean_records(columns)``: records of one or more text fields (a text and its pair, a prompt and its
  response) -> the records kept, every field cleaned; each field is one document of the counts, and a record is
  dropped when a step removes any of its fields.

Rules: steps run in the order of the list. A step returns one text per document, or None to remove it; a text that
is empty or only whitespace also counts as removed by that step, so the steps after it never see blank documents.
Stateless steps may run in ``num_proc`` processes; a stateful step (deduplication) runs in this process over the
documents in their order. A chain works on its own copies of the stateful steps, so the same built steps can clean
two corpora, or one twice, each time starting from an empty state.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Callable, Sequence

import datasets
import numpy as np
import pyarrow.compute as pc

from hookformer.core.datacache import digest, quiet_datasets
from hookformer.core.errors import DataError
from hookformer.core.parts import Cleaner

#: Part of every cleaned-documents cache key: bump it when the chain's output or its trace columns change.
CHAIN_VERSION = 1
#: Characters of a removed document the report keeps as an example.
EXAMPLE_CHARS = 300
# Per step: documents in, kept, removed, changed; bytes in, kept, removed (bytes "changed" is what is left over).
_DOCS_IN, _DOCS_KEPT, _DOCS_REMOVED, _DOCS_CHANGED, _BYTES_IN, _BYTES_KEPT, _BYTES_REMOVED = range(7)
_TRACE_FEATURES = datasets.Features({
    "text": datasets.Value("string"),
    "_bytes": datasets.List(datasets.Value("int64")),
    "_changed": datasets.List(datasets.Value("bool")),
})


def step_name(step: Cleaner) -> str:
    """How the report names a step: its ``name`` attribute (the built-in steps have their part name), else its
    class name."""
    return getattr(step, "name", None) or type(step).__name__


def run_steps(steps: Sequence[Cleaner], texts: Sequence[str | None]) -> tuple[list[str | None], np.ndarray,
                                                                               np.ndarray]:
    """Apply ``steps`` in order to ``texts`` (None: a document already removed). Returns the cleaned texts (None where
    removed), the UTF-8 size of every document before the first step and after each step, (n, steps + 1) with -1
    once removed, and whether each step changed each document, (n, steps)."""
    sizes = np.full((len(texts), len(steps) + 1), -1, dtype=np.int64)
    changed = np.zeros((len(texts), len(steps)), dtype=bool)
    alive = [i for i, text in enumerate(texts) if text is not None]
    current = [texts[i] for i in alive]
    current_sizes = [len(text.encode()) for text in current]
    sizes[alive, 0] = current_sizes
    for k, step in enumerate(steps):
        cleaned = step(current) if current else []
        if len(cleaned) != len(current):
            raise DataError(f"cleaning step {k} ({step_name(step)}) returned {len(cleaned)} texts for a batch of "
                            f"{len(current)}; a cleaner returns one text (or None) per document.")
        survivors, kept, kept_sizes = [], [], []
        for i, before, after, size in zip(alive, current, cleaned, current_sizes):
            if after is None or not after or after.isspace():
                continue
            if after is not before and after != before:
                changed[i, k] = True
                size = len(after.encode())
            sizes[i, k + 1] = size
            survivors.append(i)
            kept.append(after)
            kept_sizes.append(size)
        alive, current, current_sizes = survivors, kept, kept_sizes
    out: list[str | None] = [None] * len(texts)
    for i, text in zip(alive, current):
        out[i] = text
    return out, sizes, changed


class _Segment:
    """Consecutive steps run by one ``Dataset.map`` pass; picklable, so a stateless segment can run in worker
    processes. Output rows match input rows: ``text`` (None once removed) plus the trace of :func:`run_steps`."""

    def __init__(self, steps: Sequence[Cleaner]):
        self.steps = list(steps)

    def __call__(self, batch: dict) -> dict:
        texts, sizes, changed = run_steps(self.steps, batch["text"])
        return {"text": texts, "_bytes": sizes.tolist(), "_changed": changed.tolist()}


class CleaningChain:
    """The cleaning steps of a run, with their counts; ``examples`` removed documents are kept per step."""

    def __init__(self, steps: Sequence[Cleaner], *, examples: int = 3):
        self.steps = [copy.deepcopy(step) if step.stateful else step for step in steps]
        self.names = [step_name(step) for step in self.steps]
        self.examples = examples
        self.cache_hit: bool | None = None  # set by apply()
        self._counts = np.zeros((len(self.steps), 7), dtype=np.int64)
        self._examples: list[list[str]] = [[] for _ in self.steps]

    def fingerprint(self) -> str:
        """Changes whenever a step, its options or their order change (part of every data cache key)."""
        return digest(CHAIN_VERSION, [step.fingerprint() for step in self.steps])

    # -- batch by batch -------------------------------------------------------------------------------------------
    def clean_batch(self, texts: Sequence[str]) -> list[str]:
        """The documents of ``texts`` that every step keeps, cleaned, in order; the counts grow accordingly."""
        cleaned, sizes, changed = run_steps(self.steps, texts)
        self._count(sizes, changed, lambda rows: [texts[i] for i in rows])
        return [text for text in cleaned if text is not None]

    def clean_records(self, columns: Sequence[Sequence[str]], what: str = "record") -> tuple[np.ndarray,
                                                                                             list[list[str]]]:
        """Records made of ``columns`` (one list of texts per field, aligned): the indices of the records whose every
        field every step keeps, and each column's cleaned texts of those records; the counts grow by every field.
        Raises DataError naming the step when records came in and none is kept (``what`` names a record)."""
        n = len(columns[0]) if columns else 0
        if not self.steps or not n:
            return np.arange(n), [list(column) for column in columns]
        texts = [text for column in columns for text in column]
        cleaned, sizes, changed = run_steps(self.steps, texts)
        self._count(sizes, changed, lambda rows: [texts[i] for i in rows])
        whole = (sizes.reshape(len(columns), n, -1) >= 0).all(axis=0)  # (records, steps + 1): every field still in
        kept = np.flatnonzero(whole[:, -1])
        if n and not len(kept):
            last = int(np.flatnonzero(~whole[:, 1:].any(axis=0))[0])  # the first step after which no record is whole
            raise DataError(self._removed_everything(last, f"{what}: after step cleaning.{last} ({self.names[last]}) "
                                                           f"none of the {n} has all its fields left"))
        return kept, [[cleaned[c * n + i] for i in kept] for c in range(len(columns))]

    # -- a whole Dataset ------------------------------------------------------------------------------------------
    def apply(self, documents: datasets.Dataset, *, source_fingerprint: str, cache_dir: Path,
              num_proc: int = 1) -> datasets.Dataset:
        """``documents`` (one ``text`` column, no blank text) cleaned, read from the cache when this source and chain
        were cleaned before. Raises DataError when the chain removes every document."""
        if not self.steps:
            return documents
        cache_dir.mkdir(parents=True, exist_ok=True)
        current, sizes, changed, hits, done = documents, [], [], [], 0
        # One pass per run of consecutive stateless or stateful steps: the cached passes do not depend on num_proc.
        for stateful, group in itertools.groupby(self.steps, key=lambda step: bool(step.stateful)):
            steps = list(group)
            key = digest(CHAIN_VERSION, source_fingerprint, done,
                         [step.fingerprint() for step in self.steps[:done + len(steps)]])
            cache_file = cache_dir / f"{key}.arrow"
            hits.append(any(cache_dir.glob(f"{key}*.arrow")))
            with quiet_datasets():
                current = current.map(
                    _Segment(steps), batched=True, features=_TRACE_FEATURES,
                    remove_columns=[name for name in current.column_names if name != "text"],
                    # A stateful step sees the documents in order, in this process; None: no pool at all.
                    num_proc=num_proc if num_proc > 1 and not stateful else None,
                    new_fingerprint=key, cache_file_name=str(cache_file),
                )
            pass_sizes = _list_column(current, "_bytes", len(steps) + 1)
            sizes.append(pass_sizes if done == 0 else pass_sizes[:, 1:])  # a pass starts where the last one ended
            changed.append(_list_column(current, "_changed", len(steps)))
            done += len(steps)
        self.cache_hit = all(hits)
        all_sizes = np.concatenate(sizes, axis=1)
        self._count(all_sizes, np.concatenate(changed, axis=1), lambda rows: documents.select(rows)["text"])
        self.check_kept_some()
        kept = np.flatnonzero(all_sizes[:, -1] >= 0)
        return current.select_columns(["text"]).select(kept, keep_in_memory=True)

    # -- counts ---------------------------------------------------------------------------------------------------
    def _count(self, sizes: np.ndarray, changed: np.ndarray, originals: Callable[[list[int]], list[str]]) -> None:
        for k in range(len(self.steps)):
            before, after = sizes[:, k], sizes[:, k + 1]
            alive, kept = before >= 0, after >= 0
            removed = alive & ~kept
            self._counts[k] += [alive.sum(), kept.sum(), removed.sum(), changed[:, k].sum(),
                                before[alive].sum(), after[kept].sum(), before[removed].sum()]
            wanted = self.examples - len(self._examples[k])
            if wanted > 0 and removed.any():
                rows = np.flatnonzero(removed)[:wanted].tolist()
                self._examples[k].extend(_excerpt(text) for text in originals(rows))

    def report(self) -> list[dict]:
        """One entry per step, in order: documents and UTF-8 bytes in, kept, removed (whole documents) and changed
        (documents edited; bytes: what the edits took out, negative when they added), and examples of removed
        documents as they entered the chain (cut to 300 characters)."""
        entries = []
        for k, (step, name) in enumerate(zip(self.steps, self.names)):
            c = self._counts[k].tolist()
            entries.append({
                "step": name, "index": k, "stateful": bool(step.stateful), "fingerprint": step.fingerprint(),
                "documents": {"in": c[_DOCS_IN], "kept": c[_DOCS_KEPT], "removed": c[_DOCS_REMOVED],
                              "changed": c[_DOCS_CHANGED]},
                "bytes": {"in": c[_BYTES_IN], "kept": c[_BYTES_KEPT], "removed": c[_BYTES_REMOVED],
                          "changed": c[_BYTES_IN] - c[_BYTES_KEPT] - c[_BYTES_REMOVED]},
                "examples": list(self._examples[k]),
            })
        return entries

    def check_kept_some(self) -> None:
        """DataError naming the step that removed the last documents, if documents came in and none came out."""
        if not self.steps or self._counts[0, _DOCS_IN] == 0 or self._counts[-1, _DOCS_KEPT] > 0:
            return
        last = max(k for k in range(len(self.steps)) if self._counts[k, _DOCS_REMOVED])
        raise DataError(self._removed_everything(
            last, f"document: step cleaning.{last} ({self.names[last]}) removed the last "
                  f"{self._counts[last, _DOCS_REMOVED]} of the {self._counts[0, _DOCS_IN]} that entered the chain"))

    def _removed_everything(self, last: int, what: str) -> str:
        counts = ", ".join(f"{name} {self._counts[k, _DOCS_KEPT]}" for k, name in enumerate(self.names))
        return (f"cleaning removed every {what} (documents kept after each step: {counts}). Loosen the options of "
                f"cleaning.{last} or take it out of the cleaning list; `hookformer data` shows examples of what each "
                f"step removes.")


def _list_column(trace: datasets.Dataset, name: str, width: int) -> np.ndarray:
    """A trace column (a list of ``width`` values per row) as a (rows, width) array."""
    return pc.list_flatten(trace.data.column(name)).to_numpy(zero_copy_only=False).reshape(len(trace), width)


def _excerpt(text: str) -> str:
    if len(text) <= EXAMPLE_CHARS:
        return text
    return f"{text[:EXAMPLE_CHARS]}... ({len(text) - EXAMPLE_CHARS} more characters)"
