"""Objective ``seq2seq``: cross-entropy of an encoder-decoder's predictions of the target tokens, with teacher forcing.

The batch holds the fields of data part ``pairs``: the source (``input_ids``, ``attention_mask``) for the encoder, the
target shifted right (``decoder_input_ids``, starting with the beginning-of-sequence token, and
``decoder_attention_mask``) for the decoder, and ``labels``, the target followed by end-of-sequence (-100 on
padding). The decoder's logits at position t score ``labels[t]``: the loss is summed over the labeled tokens. Label
smoothing shapes the training loss only; evaluation reports the real loss. The result's logits and targets give the
metric ``accuracy`` the token accuracy.

The denoising objectives (``span_corruption``, ``text_infilling``) are this objective after a ``transform`` that builds
those fields from plain token blocks.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from hookformer.core.errors import ConfigError
from hookformer.core.objective import batch_field
from hookformer.core.parts import ObjectiveResult, PartOptions
from hookformer.plugins.data.pairs import seq2seq_table

IGNORE = -100
#: The batch fields a seq2seq objective reads, besides ``input_ids``.
DECODER_FIELDS = ("decoder_input_ids", "labels")


class Seq2SeqOptions(PartOptions):
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="label smoothing of the training cross-entropy "
                                   "(evaluation scores the unsmoothed loss)")


class Seq2Seq:
    """Teacher-forced target cross-entropy; implements the shared-forward extension (the engine passes the decoder
    fields to the model)."""

    heads = ("lm",)
    name = "seq2seq"
    provider = "use data.name: pairs (or code_summaries), which gives source/target pairs"

    def __init__(self, options: Seq2SeqOptions):
        self.label_smoothing = options.label_smoothing

    def score(self, outputs: dict, batch: dict, training: bool = False) -> ObjectiveResult:
        """The summed cross-entropy over the labeled target tokens."""
        for field in DECODER_FIELDS:
            batch_field(batch, field, self.name, self.provider)
        logits, targets = outputs["lm"], batch["labels"]
        if logits.shape[:2] != targets.shape:
            raise ConfigError(f"objective {self.name}: the model gives logits of shape {tuple(logits.shape)} for "
                              f"labels of shape {tuple(targets.shape)}; it must score every decoder position (use "
                              f"model.name: encoder_decoder).")
        loss_sum = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                                   ignore_index=IGNORE, reduction="sum",
                                   label_smoothing=self.label_smoothing if training else 0.0)
        return ObjectiveResult(loss_sum, int((targets != IGNORE).sum()), logits=logits, targets=targets,
                               ignore_index=IGNORE)


def require_encoder_decoder(ctx, objective: str) -> None:
    """ConfigError unless the run's model is an encoder-decoder (declares ``encoder_decoder = True``)."""
    model = ctx.model
    if model is not None and not getattr(model, "encoder_decoder", False):
        raise ConfigError(f"objective {objective} trains an encoder-decoder: the decoder reads the encoder's output "
                          f"through cross-attention, which the model part ({type(model).__name__}) does not have. Set "
                          f"model.name: encoder_decoder (a decoder-only model learns pairs with data.name: "
                          f"prompt_response and objective.name: sft).")


def build(options: Seq2SeqOptions, ctx) -> Seq2Seq:
    require_encoder_decoder(ctx, "seq2seq")
    return Seq2Seq(options)


class Denoising(Seq2Seq):
    """A seq2seq objective on corrupted text: ``transform`` corrupts each row of a batch of token blocks (the real
    tokens of ``input_ids``, ``attention_mask`` where given) with ``corrupt(tokens, rng) -> (source, target)`` and
    builds the seq2seq fields from the pairs (as data part ``pairs`` does, each side within the block's width).
    Training draws from the run's seeded torch RNG (a resumed run corrupts as the uninterrupted one); evaluation
    from ``eval_seed``, so every evaluation scores the same task."""

    provider = "use a data part that gives blocks of tokens, e.g. data.name: builtin"

    def __init__(self, options, special):
        super().__init__(options)
        self.special, self.eval_seed = special, options.eval_seed

    def corrupt(self, tokens: list[int], rng: np.random.Generator) -> tuple[list[int], list[int]]:
        raise NotImplementedError

    def transform(self, batch: dict, training: bool) -> dict:
        """The seq2seq fields of the corrupted rows (the block's other fields no longer line up and are dropped)."""
        ids = batch["input_ids"]
        seed = int(torch.randint(2**62, (1,))) if training else self.eval_seed
        rng = np.random.default_rng(seed)
        width, mask = ids.shape[1], batch.get("attention_mask")
        rows = []
        for i, row in enumerate(ids.cpu()):
            real = row[mask[i].cpu().bool()] if mask is not None else row
            # One token is left out, so that the source with its end-of-sequence token still fits the block.
            rows.append(real[:width - 1].tolist())
        sources, targets = zip(*(self.corrupt(row, rng) for row in rows))
        table = seq2seq_table(list(sources), list(targets), self.special, width, width)
        return {name: tensor.to(ids.device) for name, tensor in table.items()}
