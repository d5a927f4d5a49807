"""Extractive question answering: predict where the answer starts and ends in the context (BERT on SQuAD).

The objective attaches the head ``qa_span`` (dropout -> linear to two scores per position: start and end). Its data
is a question-answering data part (``squad``, ``stdlib_qa``; see :mod:`hookformer.plugins.data.squad` for the
examples tables): rows of windows laid end to end, which ``transform`` splits into one window per row, dropping unused
window slots. The loss is the cross-entropy of the start scores against ``start_positions`` plus that of the end
scores against ``end_positions``, halved, summed over windows (a window without the answer is labeled with position
0, the ``[cls]`` token).

At evaluation the objective also answers each question: over all its windows, the best span (start and end on
context tokens, end not before start, at most ``max_answer_tokens`` tokens) by start score + end score, turned back
into the context's characters through the tokens' ``offsets``. Where questions may have no answer (the data has
unanswerable questions, or ``allow_no_answer``), it answers nothing (the empty string) when the no-answer score
(start and end scores at position 0, the lowest over the question's windows) beats the best span by more than
``no_answer_threshold``. The predicted texts and each question's reference answers (the empty string for an
unanswerable question) go in ``ObjectiveResult.predictions`` / ``references`` for metric ``squad``.

The contexts and answers come from the data part's ``qa_examples`` (a list indexed by the tables' ``example_index``,
each with ``context`` and ``answers``, ``(answer_start, text)`` pairs) and ``has_unanswerable``: a third-party data
part that gives them works too.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from hookformer.core.errors import ConfigError
from hookformer.core.parts import MODEL_INPUTS, BuildContext, ObjectiveResult, PartOptions
from hookformer.plugins.objectives.classification import linear_head

HEAD = "qa_span"
IGNORE = -100
#: The batch fields laid out per window position, split with the windows.
_PER_POSITION = ("input_ids", "offsets", *MODEL_INPUTS)


class ExtractiveQAOptions(PartOptions):
    max_answer_tokens: int = Field(30, ge=1, description="longest answer the evaluation extracts, in tokens")
    allow_no_answer: bool | None = Field(
        None, description="whether an answer may be empty (no answer in the context): null = when the data has "
        "unanswerable questions (SQuAD v2.0)")
    no_answer_threshold: float = Field(
        0.0, ge=-1e4, le=1e4, description="answer nothing when the no-answer score exceeds the best span's score by "
        "more than this (raise it to answer more questions)")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout on the hidden states, before the span head")


class SpanHead(nn.Module):
    """``(hidden, attention_mask) -> (B, T, 2)``: the start and end score of every position."""

    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.out = linear_head(width, 2)

    def forward(self, hidden, attention_mask=None):
        return self.out(self.drop(hidden))


def windows(batch: dict) -> dict:
    """``batch`` with one window per row: each row's W windows (W = ``start_positions``'s width) split apart, the
    unused slots (no real token) left out; ``example_index`` repeated for each window."""
    rows, slots = batch["start_positions"].shape
    length = batch["input_ids"].shape[1] // slots
    split = {name: value.reshape(rows * slots, length, *value.shape[2:]) for name, value in batch.items()
             if name in _PER_POSITION}
    split.update(start_positions=batch["start_positions"].reshape(-1), end_positions=batch["end_positions"].reshape(-1),
                 example_index=batch["example_index"].repeat_interleave(slots))
    if slots == 1:
        return split
    used = split["attention_mask"].bool().any(dim=1)
    return {name: value[used] for name, value in split.items()}


def best_spans(start: torch.Tensor, end: torch.Tensor, context: torch.Tensor, max_tokens: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per window (rows of the (R, T) scores): the best span's score, first and last position over spans of context
    positions (``context`` (R, T) bool) with ``first <= last < first + max_tokens``. The score is -inf for a window
    without context."""
    start = start.float().masked_fill(~context, float("-inf"))
    end = end.float().masked_fill(~context, float("-inf"))
    band = F.pad(end, (0, max_tokens - 1), value=float("-inf")).unfold(1, max_tokens, 1)  # band[r, i, k] = end[r, i+k]
    scores = (start.unsqueeze(-1) + band).flatten(1)
    best, flat = scores.max(dim=1)
    first = flat // max_tokens
    return best, first, first + flat % max_tokens


class ExtractiveQA:
    """See the module docstring. ``examples``: the data part's ``qa_examples``."""

    heads = (HEAD,)
    loss_unit = "window"

    def __init__(self, examples: list, max_answer_tokens: int, allow_no_answer: bool, no_answer_threshold: float):
        self.examples = examples
        self.max_answer_tokens = max_answer_tokens
        self.allow_no_answer = allow_no_answer
        self.no_answer_threshold = no_answer_threshold

    def transform(self, batch: dict, training: bool) -> dict:
        return windows(batch)

    def score(self, outputs: dict, batch: dict, training: bool) -> ObjectiveResult:
        logits = outputs[HEAD]
        start, end = logits[..., 0], logits[..., 1]
        loss_sum = (F.cross_entropy(start.float(), batch["start_positions"], ignore_index=IGNORE, reduction="sum")
                    + F.cross_entropy(end.float(), batch["end_positions"], ignore_index=IGNORE, reduction="sum")) / 2
        result = ObjectiveResult(loss_sum, int((batch["start_positions"] != IGNORE).sum()))
        if not training:
            result.predictions, result.references = self.answer(start.detach(), end.detach(), batch)
        return result

    def answer(self, start: torch.Tensor, end: torch.Tensor, batch: dict) -> tuple[list[str], list[list[str]]]:
        """The predicted text and the reference answers of each question in the batch, in order of appearance."""
        offsets = batch["offsets"]
        best, first, last = best_spans(start, end, offsets[..., 0] >= 0, self.max_answer_tokens)
        no_answer = (start[:, 0] + end[:, 0]).float()
        questions: dict[int, list[int]] = {}
        for window, index in enumerate(batch["example_index"].tolist()):
            questions.setdefault(index, []).append(window)
        predictions, references = [], []
        for index, rows in questions.items():
            example = self.examples[index]
            rows_t = torch.tensor(rows, device=best.device)
            window = rows[int(best[rows_t].argmax())]
            span_score, null_score = float(best[window]), float(no_answer[rows_t].min())
            if span_score == float("-inf") or (
                    self.allow_no_answer and null_score - span_score > self.no_answer_threshold):
                predictions.append("")
            else:
                char_start = int(offsets[window, first[window], 0])
                char_end = int(offsets[window, last[window], 1])
                predictions.append(example.context[char_start:char_end].strip())
            references.append([text for _, text in example.answers] or [""])
        return predictions, references


def build(options: ExtractiveQAOptions, ctx: BuildContext) -> ExtractiveQA:
    examples = getattr(ctx.data, "qa_examples", None)
    if examples is None:
        raise ConfigError("objective extractive_qa needs a question-answering data part (squad, stdlib_qa) whose "
                          "qa_examples give each question's context and answers; set data.name to one of them.")
    allow = options.allow_no_answer
    ctx.model.add_head(HEAD, SpanHead(ctx.model.d_model, options.dropout))
    return ExtractiveQA(examples, options.max_answer_tokens,
                        ctx.data.has_unanswerable if allow is None else allow, options.no_answer_threshold)
