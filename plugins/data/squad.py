"""Data part ``squad``: extractive question answering from local SQuAD-format JSON files, v1.1 and v2.0 (whose
questions marked ``is_impossible`` have no answer in their context).

Each question and its context become windows, BERT's way: ``[cls] question [sep] context window [sep]``, padded to
``max_seq_len`` tokens. A context longer than a window is cut into windows that start ``doc_stride`` context tokens
apart (overlapping when the stride is shorter than the window), at most ``max_windows`` per question. Each window is
labeled with the first and last token of the question's (first) answer, or with position 0, the ``[cls]`` token, when
the window does not hold the whole answer or the question has none: the no-answer position. The answer's tokens are
found through the tokenizer's offsets (``encode_with_offsets``), which also let the objective map a predicted span
back onto the context's text.

Examples tables. ``input_ids``, ``attention_mask`` and ``token_type_ids`` (0 on ``[cls] question [sep]``, 1 after;
left out with ``segment_ids: false``) are (N, W * max_seq_len): W windows laid end to end. ``start_positions`` and
``end_positions`` (N, W) are the labels of each window, -100 in an unused window slot. ``offsets`` (N, W *
max_seq_len, 2) are the characters of the context each context token covers, -1 on every other token.
``example_index`` (N,) is the question's index in :attr:`QASource.qa_examples`, which holds its context and answers.
The training split has one window per row (W = 1): windows are trained on independently and shuffled. The validation
split has one question per row, with W the most windows a question has, so that a question is always scored over all
its windows at once whatever the evaluation's batches (objective ``extractive_qa`` splits the rows into windows).

Answers are checked against their contexts when the files are read: an ``answer_start`` that does not point at the
answer's text is a ConfigError naming the file, the question id and what the context holds there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from pydantic import Field

from hookformer.core.errors import ConfigError
from hookformer.core.parts import BuildContext, PartOptions, Tokenizer
from hookformer.plugins.data.common import held_out_split

IGNORE = -100


class WindowOptions(PartOptions):
    """How questions and contexts become windows (shared by the question-answering data parts)."""

    max_seq_len: int = Field(384, ge=8, description="tokens per window, special tokens included (the model's "
                             "context length)")
    doc_stride: int = Field(128, ge=1, description="context tokens from the start of one window to the start of the "
                            "next (at most the context room of a window, so no context token is skipped)")
    max_question_tokens: int = Field(64, ge=1, description="longer questions are cut to this many tokens (and to "
                                     "half a window at most, so the context keeps room)")
    max_windows: int = Field(8, ge=1, description="windows per question at most; the rest of a longer context is "
                             "left out (counted in the data report)")
    segment_ids: bool = Field(True, description="give the model token_type_ids (needs model.type_vocab_size: 2); "
                              "false for a model without segment embeddings")


class SquadOptions(WindowOptions):
    train_file: str = Field(description="the training questions: a SQuAD-format JSON file (v1.1 or v2.0)")
    validation_file: str | None = Field(None, description="the validation questions, same format; null: hold out "
                                        "val_fraction of the training articles (so no context is on both sides)")
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5, description="without validation_file: share of the training "
                                "articles held out for validation (seeded, at least one)")


@dataclass(frozen=True)
class QAExample:
    """One question: its ``id``, its ``context``, and its ``answers`` as ``(answer_start, text)`` character spans of
    the context (none for an unanswerable question)."""

    id: str
    question: str
    context: str
    answers: tuple[tuple[int, str], ...]

    @property
    def answerable(self) -> bool:
        return bool(self.answers)


class QASource:
    """A :class:`~hookformer.core.parts.DataSource` of extractive question answering (see the module docstring).

    ``qa_examples``: every question, training split first, indexed by the tables' ``example_index``; objective
    ``extractive_qa`` reads each question's context and answers there. ``has_unanswerable``: some question has no
    answer (SQuAD v2.0), so the objective may predict none."""

    def __init__(self, splits: dict[str, list[QAExample]], options: WindowOptions, report: dict):
        for name, examples in splits.items():
            if not examples:
                raise ConfigError(f"data: the {name} split holds no question; check the file given for it.")
        self.splits = splits
        self.qa_examples = [example for name in ("train", "validation") for example in splits[name]]
        self.has_unanswerable = any(not example.answerable for example in self.qa_examples)
        self.block_size = options.max_seq_len
        self.doc_stride = options.doc_stride
        self.max_question_tokens = min(options.max_question_tokens, options.max_seq_len // 2)
        self.max_windows = options.max_windows
        self.segment_ids = options.segment_ids
        self.report = {**report, "max_seq_len": options.max_seq_len, "doc_stride": options.doc_stride,
                       "questions": {name: len(examples) for name, examples in splits.items()},
                       "unanswerable": {name: sum(not e.answerable for e in examples)
                                        for name, examples in splits.items()}}

    def texts(self) -> Iterator[str]:
        """The training text (to train a tokenizer): each context once, and every question."""
        seen = set()
        for example in self.splits["train"]:
            if example.context not in seen:
                seen.add(example.context)
                yield example.context
            yield example.question

    def prepare(self, tokenizer: Tokenizer) -> dict[str, dict[str, torch.Tensor]]:
        if not hasattr(tokenizer, "encode_with_offsets"):
            raise ConfigError(f"data: question answering maps answers onto tokens through the tokenizer's offsets, "
                              f"and {type(tokenizer).__name__} has no encode_with_offsets; use tokenizer byte, "
                              f"sentencepiece or hf_tokenizer.")
        tables, counts = {}, {}
        first = 0
        for name in ("train", "validation"):
            examples = self.splits[name]
            tables[name], counts[name] = self.encode(tokenizer, examples, first, one_window_per_row=name == "train")
            first += len(examples)
        self.report.update(tokenizer=tokenizer.fingerprint(),
                           **{key: {name: c[key] for name, c in counts.items()} for key in counts["train"]})
        return tables

    def encode(self, tokenizer: Tokenizer, examples: list[QAExample], first_index: int,
               one_window_per_row: bool) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
        """The examples table of ``examples`` (their ``example_index`` counted from ``first_index``) and the counts
        the data report gives: windows, questions cut, contexts cut, answers outside every kept window."""
        special, length = tokenizer.special, self.block_size
        contexts: dict[str, tuple[list[int], list[tuple[int, int]]]] = {}
        for example in examples:  # SQuAD asks several questions about each paragraph: tokenize it once
            if example.context not in contexts:
                contexts[example.context] = tokenizer.encode_with_offsets(example.context)
        questions = tokenizer.encode_batch([example.question for example in examples])
        counts = {"windows": 0, "questions_cut": 0, "contexts_cut": 0, "answers_outside_windows": 0}
        per_question = []  # (example index, [(ids, token types, offsets, start, end), ...])
        for n, (example, question) in enumerate(zip(examples, questions)):
            counts["questions_cut"] += len(question) > self.max_question_tokens
            question = question[:self.max_question_tokens]
            ids, offsets = contexts[example.context]
            room = length - len(question) - 3
            starts = window_starts(len(ids), room, min(self.doc_stride, room))
            counts["contexts_cut"] += len(starts) > self.max_windows
            starts = starts[:self.max_windows]
            span = answer_tokens(offsets, *example.answers[0]) if example.answerable else None
            head = [special.cls, *question, special.sep]
            windows, found = [], False
            for start in starts:
                end = min(start + room, len(ids))
                label = (0, 0)
                if span is not None and start <= span[0] and span[1] < end:
                    label, found = (len(head) + span[0] - start, len(head) + span[1] - start), True
                windows.append(([*head, *ids[start:end], special.sep],
                                [0] * len(head) + [1] * (end - start + 1),
                                [(-1, -1)] * len(head) + offsets[start:end] + [(-1, -1)], *label))
            counts["answers_outside_windows"] += span is not None and not found
            counts["windows"] += len(windows)
            per_question.append((first_index + n, windows))
        if one_window_per_row:
            per_question = [(index, [window]) for index, windows in per_question for window in windows]
        return self.table(per_question, special.pad), counts

    def table(self, rows: list[tuple[int, list]], pad: int) -> dict[str, torch.Tensor]:
        """Rows of windows as the examples table: each row's windows end to end, unused window slots padded."""
        slots, length = max(len(windows) for _, windows in rows), self.block_size
        ids = np.full((len(rows), slots, length), pad, dtype=np.int64)
        mask = np.zeros((len(rows), slots, length), dtype=np.int64)
        types = np.zeros((len(rows), slots, length), dtype=np.int64)
        offsets = np.full((len(rows), slots, length, 2), -1, dtype=np.int64)
        positions = np.full((len(rows), slots, 2), IGNORE, dtype=np.int64)
        for r, (_, windows) in enumerate(rows):
            for w, (window_ids, window_types, window_offsets, start, end) in enumerate(windows):
                size = len(window_ids)
                ids[r, w, :size], mask[r, w, :size], types[r, w, :size] = window_ids, 1, window_types
                offsets[r, w, :size] = window_offsets
                positions[r, w] = start, end
        table = {"input_ids": ids.reshape(len(rows), -1), "attention_mask": mask.reshape(len(rows), -1),
                 "offsets": offsets.reshape(len(rows), -1, 2), "start_positions": positions[..., 0],
                 "end_positions": positions[..., 1], "example_index": np.array([i for i, _ in rows], dtype=np.int64)}
        if self.segment_ids:
            table["token_type_ids"] = types.reshape(len(rows), -1)
        return {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in table.items()}


def window_starts(context_tokens: int, room: int, stride: int) -> list[int]:
    """Where each window of ``room`` context tokens starts, ``stride`` apart, until one reaches the context's end."""
    starts = [0]
    while starts[-1] + room < context_tokens:
        starts.append(starts[-1] + stride)
    return starts


def answer_tokens(offsets: list[tuple[int, int]], answer_start: int, text: str) -> tuple[int, int] | None:
    """The first and last context token that cover the answer's characters, or None if no token does (an answer
    made only of characters the tokenizer drops)."""
    answer_end = answer_start + len(text)
    covering = [i for i, (start, end) in enumerate(offsets) if start < answer_end and end > answer_start]
    return (covering[0], covering[-1]) if covering else None


# -- reading ---------------------------------------------------------------------------------------------------------

def read_squad(path: Path, option: str) -> tuple[list[tuple[str, list[QAExample]]], str | None]:
    """The articles of a SQuAD-format file, each ``(title, questions)``, and the file's ``version``. ConfigError
    naming the file (and the question) for a missing file, bad JSON, a missing field, or an answer that does not
    match its context."""
    if not path.is_file():
        raise ConfigError(f"data.{option}: {path} not found; give a SQuAD-format JSON file.")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"data.{option}: {path}, line {exc.lineno}: not valid JSON ({exc.msg}).") from None
    except UnicodeDecodeError:
        raise ConfigError(f"data.{option}: {path} is not UTF-8 text.") from None
    if not isinstance(content, dict) or not isinstance(content.get("data"), list):
        raise ConfigError(f'data.{option}: {path} is not in SQuAD format: it needs a "data" list of articles, each '
                          f'with "paragraphs" of "context" and "qas".')
    articles = []
    for a, article in enumerate(content["data"]):
        where = f"data[{a}]"
        questions = []
        for p, paragraph in enumerate(_field(article, "paragraphs", list, path, where)):
            context = _field(paragraph, "context", str, path, f"{where}.paragraphs[{p}]")
            for q, qa in enumerate(_field(paragraph, "qas", list, path, f"{where}.paragraphs[{p}]")):
                questions.append(_example(qa, context, path, f"{where}.paragraphs[{p}].qas[{q}]"))
        articles.append((str(article.get("title", a)) if isinstance(article, dict) else str(a), questions))
    return articles, content.get("version")


def _field(record, name: str, kind: type, path: Path, where: str):
    if not isinstance(record, dict) or not isinstance(record.get(name), kind):
        raise ConfigError(f'{path}: {where} has no "{name}" {kind.__name__} (SQuAD format: data[].paragraphs[] with '
                          f'"context" and "qas", each question with "id", "question" and "answers").')
    return record[name]


def _example(qa, context: str, path: Path, where: str) -> QAExample:
    question = _field(qa, "question", str, path, where)
    qid = str(qa.get("id", where))
    impossible = bool(qa.get("is_impossible", False))
    answers = []
    for k, answer in enumerate([] if impossible else _field(qa, "answers", list, path, where)):
        text = _field(answer, "text", str, path, f"{where}.answers[{k}]")
        start = answer.get("answer_start")
        if not isinstance(start, int) or not 0 <= start <= len(context) - len(text) or not text \
                or context[start:start + len(text)] != text:
            there = context[start:start + len(text)] if isinstance(start, int) and start >= 0 else ""
            found = context.find(text) if text else -1
            hint = f" (the text occurs at {found})" if found >= 0 else " (the text does not occur in the context)"
            raise ConfigError(
                f"{path}: question {qid}: answer {k} {text!r} does not match its context: answer_start {start!r} "
                f"points at {there!r}{hint}. answer_start must be the character offset of the answer's text in the "
                f"paragraph's context; fix it or the text.")
        answers.append((start, text))
    if not impossible and not answers:
        raise ConfigError(f'{path}: question {qid} has no answer; give it "answers", or mark it "is_impossible": '
                          f"true (SQuAD v2.0).")
    return QAExample(qid, question, context, tuple(answers))


def build(options: SquadOptions, ctx: BuildContext) -> QASource:
    train_path = Path(options.train_file).expanduser()
    train_articles, version = read_squad(train_path, "train_file")
    files = {"train": str(train_path)}
    if options.validation_file is not None:
        validation_path = Path(options.validation_file).expanduser()
        validation_articles, _ = read_squad(validation_path, "validation_file")
        files["validation"] = str(validation_path)
    else:
        if len(train_articles) < 2:
            raise ConfigError(f"data: {train_path} holds {len(train_articles)} article(s): at least two are needed to "
                              f"hold one out for validation, or set data.validation_file.")
        kept, held_out = held_out_split(len(train_articles), options.val_fraction, ctx.seed)
        train_articles, validation_articles = [train_articles[i] for i in kept], [train_articles[i] for i in held_out]
    splits = {"train": [q for _, questions in train_articles for q in questions],
              "validation": [q for _, questions in validation_articles for q in questions]}
    return QASource(splits, options, report={"source": "squad", "version": version, "files": files})
