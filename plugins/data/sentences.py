"""Data part ``sentences``: sentence-level pretraining examples for the objectives ``sop``, ``nsp`` and
``sentence_order``, and RoBERTa's full-sentence blocks for ``mlm``.

Documents come from another data part (``source``: ``builtin``, the Python documentation, or ``text``, local text
and JSONL files), which reads them and splits them into training and validation documents; examples of each split
are built from that split's documents only. Each document is split into sentences by :func:`split_sentences`, the
sentences are tokenized in batches, and examples of ``block_size`` tokens are built (padded; ``attention_mask`` 0 on
padding). ``task`` chooses which:

- ``sop`` (ALBERT): ``[cls] A [sep] B [sep]``, A and B consecutive runs of whole sentences of one document, split at
  a random sentence boundary of a span that fills the block; swapped with probability 0.5 (``sop_labels`` 1).
- ``nsp`` (BERT): the same, but with probability 0.5 B is a run of sentences from a random other document of the
  split (``nsp_labels`` 1); the real continuation then starts the next span.
- ``permutation``: ``[cls] s1 [sep] s2 [sep] ...``, a span of 2 to ``max_sentences`` consecutive sentences in a
  random order; ``sentence_order_labels`` holds each sentence's original index (0 = it came first) at the
  sentence's first token and -100 elsewhere.
- ``full_sentences`` (RoBERTa): ``[cls] s1 s2 ... [sep]``, as many whole consecutive sentences as fit in the block,
  continuing into the next document (with a ``[sep]`` between documents) and padded; a sentence longer than the
  block fills one example on its own, cut to the block. No labels: the masked-LM objective draws its masks.

Pairs carry ``token_type_ids`` (0 for ``[cls] A [sep]``, 1 for ``B [sep]`` and padding 0), so the model needs
``type_vocab_size: 2``. A pair longer than the block is cut from the start of A and the end of B, which keeps the
text around the boundary between them. A span of a single sentence (a short document's last one, or one longer
than the block) makes no example; the report counts them. Everything random comes from the run's seed, per split.
"""

from __future__ import annotations

import re
from typing import Any, Iterator, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from hookformer.core.config import validate_options
from hookformer.core.errors import DataError
from hookformer.core.parts import BuildContext, Tokenizer
from hookformer.plugins.data import python_docs, text_files
from hookformer.plugins.data.common import DataOptions, refuse_unhonoured
from hookformer.plugins.data.pipeline import PackedSource

IGNORE = -100
#: The data parts that can provide documents: options model and factory of each.
SOURCES = {
    "builtin": (python_docs.PythonDocsOptions, python_docs.build),
    "text": (text_files.TextFilesOptions, text_files.build),
}
#: Sentence boundaries: after ".", "!" or "?" (and a closing quote or bracket right after it) where whitespace and
#: then an uppercase letter, a digit or an opening quote or bracket follow; after "。", "！" or "？"; and at a blank
#: line. No abbreviation list: "e.g. Foo" splits after "e.g.", "e.g. foo" does not.
SENTENCE_BOUNDARY = re.compile(
    r"""(?:(?<=[.!?])|(?<=[.!?]["'”’)\]]))\s+(?=["'“‘(\[]?[A-Z0-9])"""
    r"""|(?<=[。！？])\s*"""
    r"""|\n[ \t]*\n\s*"""
)
_ENCODE_BATCH = 4096


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` (see :data:`SENTENCE_BOUNDARY`), stripped, empty ones dropped."""
    return [sentence for sentence in map(str.strip, SENTENCE_BOUNDARY.split(text)) if sentence]


class SentencesOptions(DataOptions):
    block_size: int = Field(128, ge=8, description="tokens per example, [cls] and [sep] included")
    source: dict[str, Any] = Field(
        {"name": "builtin"}, description="the data part that reads the documents: {name: builtin, ...} or {name: "
        "text, paths: [...], ...} with that part's options (see hookformer plugins show data/text); block_size, "
        "val_fraction, num_proc and cache_dir are set on this part")
    task: Literal["sop", "nsp", "permutation", "full_sentences"] = Field(
        "sop", description="sop: sentence-order pairs; nsp: next-sentence pairs; permutation: shuffled spans for "
        "sentence_order; full_sentences: blocks of whole sentences for mlm (RoBERTa)")
    max_sentences: int = Field(4, ge=2, description="permutation: the most sentences in a span (the sentence_order "
                               "head's classes)")

    @field_validator("source", mode="before")
    @classmethod
    def _valid_source(cls, value: Any) -> Any:
        """Validate the source's own options with its options model (errors show as ``data.source.FIELD``)."""
        value = {"name": value} if isinstance(value, str) else value
        if not isinstance(value, dict):
            return value  # pydantic reports the type
        options = dict(value)
        name = options.pop("name", None)
        if name not in SOURCES:
            raise ValueError(f"source name must be one of {', '.join(SOURCES)} (got {name!r})")
        shared = sorted(set(options) & set(DataOptions.model_fields))
        if shared:
            raise ValueError(f"set {', '.join(shared)} on data itself, not on data.source")
        if options.get("streaming"):
            raise ValueError("streaming: sentence examples are built from the whole split of documents (nsp draws "
                             "its second sentences from any document of it), so data.source cannot stream; remove "
                             "streaming from data.source")
        model, _ = SOURCES[name]
        return {"name": name, **validate_options(model, options).model_dump(exclude=set(DataOptions.model_fields))}

    @model_validator(mode="after")
    def _honoured(self):
        refuse_unhonoured(self, ["max_document_tokens", "document_mask"], "sentence examples are cut at sentence "
                          "boundaries and padded, one span of a document per example", "use data name: text for "
                          "packed blocks")
        return self


class SentenceSource:
    """A :class:`~hookformer.core.parts.DataSource` of sentence-level examples over another part's documents."""

    applies_cleaning = True  # the documents part cleans them (PackedSource)

    def __init__(self, documents: PackedSource, options: SentencesOptions, seed: int):
        self.block_size = options.block_size
        self.max_sentences = options.max_sentences
        self.task = options.task
        self.report = {**documents.report, "source": "sentences", "documents_from": options.source["name"],
                       "task": options.task}
        self._documents = documents
        self._seed = seed

    def documents(self, split: str) -> Iterator[str]:
        """The raw documents of ``split`` ("train" or "validation") that its examples are cut from."""
        return self._documents.documents(split)

    def texts(self) -> Iterator[str]:
        """Raw training documents (to train a tokenizer); validation documents are never among them."""
        return self._documents.texts()

    def prepare(self, tokenizer: Tokenizer) -> dict[str, dict[str, torch.Tensor]]:
        """Both splits as examples tables (see the module docstring)."""
        tables, stats = {}, {}
        for index, split in enumerate(("train", "validation")):
            documents = self._sentences(split, tokenizer)
            rng = np.random.default_rng([self._seed, index])
            builder = BUILDERS.get(self.task, PairExamples)
            examples = builder(self, tokenizer, rng)
            examples.add(documents)
            if not examples.rows:
                need = "" if self.task == "full_sentences" else "; every span needs two sentences"
                raise DataError(f"the {split} split makes no {self.task} example (it has {len(documents)} documents "
                                f"with {sum(map(len, documents))} sentences{need}): make the corpus or "
                                f"data.val_fraction larger")
            tables[split] = examples.table()
            stats[split] = {"sentences": sum(map(len, documents)), **examples.stats}
        self.report.update(
            tokenizer=tokenizer.fingerprint(),
            block_size=self.block_size,
            examples={split: len(table["input_ids"]) for split, table in tables.items()},
            sentences={split: counts for split, counts in stats.items()},
        )
        return tables

    def _sentences(self, split: str, tokenizer: Tokenizer) -> list[list[list[int]]]:
        """The token ids of every sentence of every document of ``split`` (sentences that encode to nothing left
        out), tokenized in batches."""
        counts, sentences = [], []
        for text in self.documents(split):
            parts = split_sentences(text)
            counts.append(len(parts))
            sentences += parts
        encoded = [ids for start in range(0, len(sentences), _ENCODE_BATCH)
                   for ids in tokenizer.encode_batch(sentences[start:start + _ENCODE_BATCH])]
        documents, start = [], 0
        for count in counts:
            documents.append([ids for ids in encoded[start:start + count] if ids])
            start += count
        return documents


class _Examples:
    """Rows of an examples table, built one example at a time."""

    def __init__(self, source: SentenceSource, tokenizer: Tokenizer, rng: np.random.Generator):
        self.block_size = source.block_size
        self.special = tokenizer.special
        self.rng = rng
        self.rows: list[dict[str, list[int]]] = []
        self.stats = {"spans_skipped": 0, "tokens_cut": 0}

    def table(self) -> dict[str, torch.Tensor]:
        """The rows padded to ``block_size``: ``input_ids`` padded with the pad token, ``attention_mask`` 0 on
        padding, per-position fields with 0 (``token_type_ids``) or -100 (labels), per-example fields as they are."""
        n, width = len(self.rows), self.block_size
        table = {"input_ids": torch.full((n, width), self.special.pad, dtype=torch.long),
                 "attention_mask": torch.zeros(n, width, dtype=torch.long)}
        for name, value in self.rows[0].items():
            if name == "input_ids":
                continue
            if isinstance(value, list):
                table[name] = torch.full((n, width), 0 if name == "token_type_ids" else IGNORE, dtype=torch.long)
            else:
                table[name] = torch.tensor([row[name] for row in self.rows], dtype=torch.long)
        for i, row in enumerate(self.rows):
            length = len(row["input_ids"])
            table["attention_mask"][i, :length] = 1
            for name, value in row.items():
                if isinstance(value, list):
                    table[name][i, :length] = torch.tensor(value, dtype=torch.long)
        return table


class PairExamples(_Examples):
    """``[cls] A [sep] B [sep]`` examples for ``sop`` or ``nsp`` (see the module docstring)."""

    def __init__(self, source: SentenceSource, tokenizer: Tokenizer, rng: np.random.Generator):
        super().__init__(source, tokenizer, rng)
        self.task = source.task
        self.max_tokens = self.block_size - 3  # [cls], two [sep]
        self.stats["label_1_share"] = 0.0

    def add(self, documents: list[list[list[int]]]) -> None:
        if self.task == "nsp" and len(documents) < 2:
            raise DataError(f"next-sentence pairs need at least two documents in every split, and a split has "
                            f"{len(documents)}: make the corpus or data.val_fraction larger")
        for d, document in enumerate(documents):
            chunk, length, i = [], 0, 0
            while i < len(document):
                chunk.append(document[i])
                length += len(document[i])
                if i == len(document) - 1 or length >= self.max_tokens:
                    i -= self._example(chunk, d, documents)
                    chunk, length = [], 0
                i += 1
        self.stats["label_1_share"] = float(np.mean([row[f"{self.task}_labels"] for row in self.rows] or [0.0]))

    def _example(self, chunk: list[list[int]], d: int, documents: list) -> int:
        """Add the example of one span of sentences; return how many of its sentences go back to the document
        (those that a random B replaced)."""
        if len(chunk) < 2:
            self.stats["spans_skipped"] += 1
            return 0
        a_end = int(self.rng.integers(1, len(chunk)))
        a = [token for sentence in chunk[:a_end] for token in sentence]
        label = int(self.rng.random() < 0.5)
        unused = 0
        if self.task == "nsp" and label:
            b = self._random_b(d, documents, self.max_tokens - len(a))
            unused = len(chunk) - a_end
        else:
            b = [token for sentence in chunk[a_end:] for token in sentence]
        a, b = self._fit(a, b)
        if self.task == "sop" and label:
            a, b = b, a
        cls, sep = self.special.cls, self.special.sep
        self.rows.append({"input_ids": [cls, *a, sep, *b, sep],
                          "token_type_ids": [0] * (len(a) + 2) + [1] * (len(b) + 1),
                          f"{self.task}_labels": label})
        return unused

    def _random_b(self, d: int, documents: list, target: int) -> list[int]:
        """Sentences from a random start in a random other document, until ``target`` tokens (at least one)."""
        other = int(self.rng.integers(len(documents) - 1))
        document = documents[other + (other >= d)]
        b = []
        for sentence in document[int(self.rng.integers(len(document))):]:
            b += sentence
            if len(b) >= target:
                break
        return b

    def _fit(self, a: list[int], b: list[int]) -> tuple[list[int], list[int]]:
        """Cut the pair to the block, a token at a time from the longer segment (B on a tie): A from its start, B
        from its end, so the text around their boundary stays."""
        start, end = 0, len(b)
        while len(a) - start + end > self.max_tokens:
            if len(a) - start > end:
                start += 1
            else:
                end -= 1
        self.stats["tokens_cut"] += start + len(b) - end
        return a[start:], b[:end]


class PermutationExamples(_Examples):
    """``[cls] s [sep] s [sep] ...`` examples with shuffled sentences for ``sentence_order``."""

    def __init__(self, source: SentenceSource, tokenizer: Tokenizer, rng: np.random.Generator):
        super().__init__(source, tokenizer, rng)
        self.max_sentences = source.max_sentences
        # Any two sentences fit: [cls] s1 [sep] s2 [sep].
        self.longest = (self.block_size - 1) // 2 - 1

    def add(self, documents: list[list[list[int]]]) -> None:
        for document in documents:
            i = 0
            while i < len(document):
                span, length = [], 1
                while i < len(document) and len(span) < self.max_sentences:
                    sentence = document[i][:self.longest]
                    if length + len(sentence) + 1 > self.block_size:
                        break
                    self.stats["tokens_cut"] += len(document[i]) - len(sentence)
                    span.append(sentence)
                    length += len(sentence) + 1
                    i += 1
                self._example(span)

    def _example(self, span: list[list[int]]) -> None:
        if len(span) < 2:
            self.stats["spans_skipped"] += 1
            return
        ids, labels = [self.special.cls], [IGNORE]
        for original in self.rng.permutation(len(span)):
            sentence = span[original]
            ids += [*sentence, self.special.sep]
            labels += [int(original)] + [IGNORE] * len(sentence)
        self.rows.append({"input_ids": ids, "sentence_order_labels": labels})


class FullSentenceExamples(_Examples):
    """``[cls] s1 s2 ... [sep]`` blocks of whole sentences across documents (see the module docstring)."""

    def add(self, documents: list[list[list[int]]]) -> None:
        room = self.block_size - 2  # [cls], the final [sep]
        ids: list[int] = []
        for document in documents:
            if ids and len(ids) < room:
                ids.append(self.special.sep)  # between documents
            for sentence in document:
                if ids and len(ids) + len(sentence) > room:
                    self._example(ids)
                    ids = []
                self.stats["tokens_cut"] += max(0, len(sentence) - room)
                ids += sentence[:room]
        if ids:
            self._example(ids)

    def _example(self, ids: list[int]) -> None:
        if ids[-1] == self.special.sep:  # a block that ends at a document's end needs one [sep] only
            ids = ids[:-1]
        self.rows.append({"input_ids": [self.special.cls, *ids, self.special.sep]})


#: The example builder of each task (sop and nsp: pairs).
BUILDERS = {"permutation": PermutationExamples, "full_sentences": FullSentenceExamples}


def build(options: SentencesOptions, ctx: BuildContext) -> SentenceSource:
    model, factory = SOURCES[options.source["name"]]
    common = options.model_dump(include=set(DataOptions.model_fields))
    source_options = {key: value for key, value in options.source.items() if key != "name"}
    documents = factory(model.model_validate({**source_options, **common}), ctx)
    return SentenceSource(documents, options, ctx.seed)
