"""A hookformer plugin that adds the metric ``bits_per_token``: the mean evaluation loss in bits (mean loss / ln 2).

Use it in a run config with ``metrics: [loss, bits_per_token]``; evaluations then write ``val_bits_per_token``.
"""

from __future__ import annotations

import math

from pydantic import Field

from hookformer.core.hookspecs import hookimpl
from hookformer.core.parts import PartOptions, PartSpec

#: The plugin API versions this plugin is written for (a PEP 440 specifier).
HOOKFORMER_API = ">=1.0,<2"


class BitsPerTokenOptions(PartOptions):
    digits: int | None = Field(None, ge=0, description="round the value to this many decimals (null: no rounding)")


class BitsPerToken:
    """The metric protocol: reset(), update(result) per evaluation batch, compute() -> {key: value}."""

    def __init__(self, digits: int | None):
        self.digits = digits
        self.reset()

    def reset(self) -> None:
        self.loss_sum, self.items = 0.0, 0

    def update(self, result) -> None:  # result: hookformer.core.parts.ObjectiveResult
        self.loss_sum += float(result.loss_sum)
        self.items += result.num_items

    def compute(self) -> dict[str, float]:
        bits = self.loss_sum / max(1, self.items) / math.log(2)
        return {"bits_per_token": bits if self.digits is None else round(bits, self.digits)}


def build(options: BitsPerTokenOptions, ctx) -> BitsPerToken:
    return BitsPerToken(options.digits)


@hookimpl
def hookformer_parts():
    return [
        PartSpec("metric", "bits_per_token", "mean evaluation loss in bits: mean loss / ln 2 (val_bits_per_token)",
                 factory=f"{__name__}:build", options=f"{__name__}:BitsPerTokenOptions"),
    ]
