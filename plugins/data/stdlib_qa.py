"""Data part ``stdlib_qa``: extractive question answering that needs no download, for the question-answering demo.

Built from the standard library's docstrings (the ``builtin`` corpus's extraction). A docstring's summary (its first
paragraph, whitespace collapsed) is an entry ``NAME: summary``, NAME being the last part of its qualified name. The
entries of one class or module (siblings under one qualified parent) are grouped into contexts of at most
``entries_per_context`` entries, keeping only groups where some summary has a sentence that starts with "Return" or
"Returns". Each entry of a context is asked "What does NAME return?": the answer is the span after "Return(s) " up to
the end of that sentence in NAME's summary (``os.path.getsize: Return the size of a file, reported by os.stat().``
answers "the size of a file, reported by os.stat()"); a summary without such a sentence makes the question
unanswerable (SQuAD v2.0 style). So a model has to find NAME's entry among its siblings, and to tell where the answer
stops.

Training and validation are split by top-level module (seeded): no module's docstrings are on both sides. The data
report gives two baselines on the validation questions, exact match and F1 of rules that need no model: ``no_answer``
(answer nothing) and ``first_return`` (whatever follows the first "Return" of the context, ignoring NAME).
"""

from __future__ import annotations

import json
import re
from itertools import groupby

import numpy as np
from pydantic import Field

from hookformer.core.parts import BuildContext
from hookformer.plugins.data.common import cache_root
from hookformer.plugins.data.python_docs import corpus_file
from hookformer.plugins.data.squad import QAExample, QASource, WindowOptions
from hookformer.plugins.metrics.squad import question_scores

#: "Return ..." or "Returns ..." opening a summary or a sentence of it, up to the end of that sentence.
RETURN = re.compile(r"(?:^|(?<=[.:;] ))Returns? (?P<answer>[^ ].*?)(?=\.(?: |$)|$)")
#: Summaries longer than this many characters are left out (a few long ones would make most of the windows).
MAX_SUMMARY_CHARS = 300


class StdlibQAOptions(WindowOptions):
    max_seq_len: int = Field(128, ge=8, description="tokens per window, special tokens included (the model's "
                             "context length)")
    doc_stride: int = Field(64, ge=1, description="context tokens from the start of one window to the start of the "
                            "next (at most the context room of a window, so no context token is skipped)")
    max_question_tokens: int = Field(24, ge=1, description="longer questions are cut to this many tokens (and to "
                                     "half a window at most)")
    segment_ids: bool = Field(False, description="give the model token_type_ids (needs model.type_vocab_size: 2)")
    entries_per_context: int = Field(4, ge=1, le=32, description="docstring summaries per context at most")
    val_fraction: float = Field(0.15, gt=0.0, lt=0.5, description="share of the questions held out for validation, "
                                "as whole top-level modules (seeded)")
    cache_dir: str | None = Field(None, description="where the extracted docstrings are cached (default: "
                                  "$HOOKFORMER_CACHE/data, or ~/.cache/hookformer/data)")


def summary(docstring: str) -> str:
    """A docstring's first paragraph with its whitespace collapsed."""
    return " ".join(docstring.split("\n\n", 1)[0].split())


def return_answer(text: str) -> re.Match | None:
    """The first "Return(s) ..." sentence of ``text``; group ``answer`` is what follows the verb."""
    return RETURN.search(text)


def contexts_of(records: list[dict], per_context: int) -> list[tuple[str, list[QAExample]]]:
    """(top-level module, questions) of each context built from the corpus ``records`` (see the module docstring)."""
    parent = lambda record: record["name"].rpartition(".")[0]  # noqa: E731 - the grouping key
    built = []
    for group_name, group in groupby(sorted(records, key=parent), key=parent):
        entries, seen = [], set()
        for record in group:
            name, text = record["name"].rpartition(".")[2], summary(record["text"])
            if name and name not in seen and len(text) <= MAX_SUMMARY_CHARS:
                seen.add(name)
                entries.append((name, text))
        for first in range(0, len(entries), per_context):
            chunk = entries[first:first + per_context]
            if not any(return_answer(text) for _, text in chunk):
                continue
            context, questions = "", []
            for name, text in chunk:
                context += ("\n" if context else "") + f"{name}: "
                match = return_answer(text)
                answers = () if match is None else ((len(context) + match.start("answer"), match.group("answer")),)
                context += text
                questions.append((f"{group_name}.{name}", f"What does {name} return?", answers))
            built.append((group_name.split(".")[0],
                          [QAExample(qid, question, context, answers) for qid, question, answers in questions]))
    return built


def first_return(example: QAExample) -> str:
    """The rule ``first_return``: what follows the context's first "Return(s)", whichever entry it is in."""
    match = return_answer(example.context)
    return match.group("answer") if match else ""


def baselines(examples: list[QAExample]) -> dict[str, dict[str, float]]:
    """Exact match and F1 over ``examples`` of the rules ``no_answer`` and ``first_return``."""
    figures = {}
    for rule, predict in (("no_answer", lambda example: ""), ("first_return", first_return)):
        scores = [question_scores(predict(e), [text for _, text in e.answers] or [""]) for e in examples]
        figures[rule] = {"exact_match": round(sum(s[0] for s in scores) / len(scores), 4),
                         "f1": round(sum(s[1] for s in scores) / len(scores), 4)}
    return figures


def build(options: StdlibQAOptions, ctx: BuildContext) -> QASource:
    path, seconds = corpus_file(cache_root(options), ["docstrings"])
    with open(path, encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    contexts = contexts_of(records, options.entries_per_context)
    modules = sorted({module for module, _ in contexts})
    questions_of = {module: 0 for module in modules}
    for module, questions in contexts:
        questions_of[module] += len(questions)
    held_out, total = set(), sum(questions_of.values())
    for i in np.random.default_rng(ctx.seed).permutation(len(modules)):
        if sum(questions_of[m] for m in held_out) >= options.val_fraction * total:
            break
        held_out.add(modules[i])
    splits = {"train": [q for module, qs in contexts if module not in held_out for q in qs],
              "validation": [q for module, qs in contexts if module in held_out for q in qs]}
    report = {"source": "stdlib_qa", "corpus": str(path), "extraction_seconds": seconds, "contexts": len(contexts),
              "validation_modules": sorted(held_out), "baselines": baselines(splits["validation"])}
    return QASource(splits, options, report)
