"""What the metrics of generated text share (``bleu``, ``chrf``, ``rouge``): the options of the generation they ask
the evaluation for, and the predicted and reference texts they collect.

A metric that scores generated text declares it with two attributes (see :func:`hookformer.core.evaluate.evaluate`):
``generation`` (a :class:`~hookformer.core.generate.Decoding`, how to decode) and ``max_examples`` (how many
validation examples to generate for: generation is slow, so it runs on the first ones only). The evaluation then
generates, decodes the outputs and the references with the tokenizer, and updates the metric with an
:class:`~hookformer.core.parts.ObjectiveResult` carrying ``predictions`` and ``references``; results without texts are
ignored.
"""

from __future__ import annotations

from pydantic import Field

from hookformer.core.parts import PartOptions


class GenerationOptions(PartOptions):
    max_examples: int = Field(64, ge=1, le=1_000_000, description="generate for the first this many validation "
                              "examples at each evaluation (generation is slow)")
    max_new_tokens: int = Field(48, ge=1, le=100_000, description="longest generated text, in tokens")
    num_beams: int = Field(1, ge=1, le=64, description="1: greedy decoding (the most likely token at each step); "
                           "more: beam search with this many beams (slower)")
    length_penalty: float = Field(1.0, ge=-10.0, le=10.0, description="beam search: a finished text scores its "
                                  "summed log-probability / length ** length_penalty (above 0 favours longer ones)")


class TextMetric:
    """Collects predicted texts and their references; ``score(predictions, references)`` gives the values of
    ``keys``."""

    keys: tuple[str, ...] = ()

    def __init__(self, options: GenerationOptions):
        self.max_examples = options.max_examples
        self.generation = decoding(options)
        self.reset()

    def reset(self) -> None:
        self.predictions: list[str] = []
        self.references: list[list[str]] = []

    def update(self, result) -> None:
        if result.predictions is None or result.references is None:
            return
        self.predictions.extend(result.predictions)
        self.references.extend(result.references)

    def compute(self) -> dict[str, float]:
        """The scores of the texts collected since ``reset``; NaN when there are none (results without texts, such
        as the engine's probe pass, still show which keys the metric reports)."""
        if not self.predictions:
            return dict.fromkeys(self.keys, float("nan"))
        return self.score(self.predictions, self.references)

    def score(self, predictions: list[str], references: list[list[str]]) -> dict[str, float]:
        raise NotImplementedError


def reference_streams(references: list[list[str]]) -> list[list[str | None]]:
    """sacrebleu's layout of the references: one stream per reference position (``streams[j][i]`` the j-th
    reference of example i), None where an example has fewer references."""
    count = max(map(len, references))
    return [[refs[j] if j < len(refs) else None for refs in references] for j in range(count)]


def decoding(options: GenerationOptions):
    """The evaluation's decoding for ``options``: deterministic (greedy or beam search), so that every evaluation
    scores the model the same way."""
    from hookformer.core.generate import Decoding  # torch, only when a metric is built

    return Decoding(max_new_tokens=options.max_new_tokens, greedy=True, num_beams=options.num_beams,
                    length_penalty=options.length_penalty)
