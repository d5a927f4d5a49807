"""Supervised fine-tuning of a decoder: the causal language-modeling loss on the response tokens only.

The data part ``prompt_response`` gives ``labels``: the input ids with the prompt and padding set to -100. The loss
is ``clm``'s next-token cross-entropy (the same code) with those labels as targets, so the prompt conditions the
response but is never a target and gets no gradient of its own.
"""

from __future__ import annotations

from hookformer.plugins.objectives.clm import CausalLM, CLMOptions, vocabulary


def build(options: CLMOptions, ctx) -> CausalLM:
    return CausalLM(options, vocabulary(ctx), labels_field="labels")
