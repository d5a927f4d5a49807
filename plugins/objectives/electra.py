"""Objective ``electra``: replaced-token detection (ELECTRA, Clark et al. 2020).

A small generator, a masked-LM over the discriminator's own token embeddings, fills the masked positions with
tokens sampled from its predictions; the model being trained, the discriminator, then says at every position
whether the token is the original or a replacement. Both are trained together:
``loss = generator MLM loss + discriminator_weight * replaced-token-detection loss`` (ELECTRA's weight is 50).

The generator is owned by the objective and attached to the model as the task head ``electra_generator``, so it is
trained (at ``train.head_lr``), checkpointed and resumed with the run; the discriminator's detection head is the
task head ``electra``. Fine-tuning from an ELECTRA run (``train.init_from`` / ``hookformer finetune``) loads the
model without its heads, so it starts from the discriminator. The generator: the shared token embedding, projected
to ``generator_d_model``, ``generator_n_layer`` bidirectional blocks of the same kind as the discriminator's (the
built-in transformer's Block), its own positions (rotary when the discriminator's are, else learned), projected back
and scored against the shared embedding (the output projection is tied to it, as in ELECTRA). It must be no wider
than the discriminator; ELECTRA found a quarter to a half of its width best (the default is a quarter).

The generator runs in ``transform`` (the shared-forward extension): it draws the masks (every masking option of
``mlm`` applies; see hookformer.plugins.objectives.masking), predicts the masked tokens and samples the
replacements (Gumbel-max with noise from the run's seeded RNG, or a fixed seed in evaluation; special tokens are
never sampled), so the discriminator's forward pass is the engine's one forward pass and ``electra`` combines with
other objectives (``combined``). A sampled token equal to the original counts as original, as in ELECTRA.

The loss is a sum over the discriminator's tokens (every real position, special tokens included), so that gradient
accumulation equals one large batch exactly: the generator's summed loss is divided by ``mask_prob`` instead of by
the number of masked tokens that this micro-batch happened to draw, which is the same in expectation. The metrics
see the discriminator's predictions (``accuracy`` is the replaced-token-detection accuracy), and the loss metric
reports ``loss_generator`` (mean over masked tokens) and ``loss_discriminator`` (mean over tokens).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field, ValidationError

from hookformer.core.errors import ConfigError
from hookformer.core.parts import ObjectiveResult
from hookformer.plugins.models.transformer import Block, Transformer, TransformerOptions, gelu, make_norm
from hookformer.plugins.objectives.combined import CombinedResult
from hookformer.plugins.objectives.masking import MaskingOptions, input_embedding
from hookformer.plugins.objectives.mlm import IGNORE, MaskedLM, masked_lm

GENERATOR_HEAD = "electra_generator"


class ElectraOptions(MaskingOptions):
    generator_d_model: int | None = Field(
        None, gt=0, description="width of the generator, at most the discriminator's model.d_model; null: a quarter "
        "of it")
    generator_n_layer: int | None = Field(None, gt=0, le=64, description="generator blocks; null: as many as the "
                                          "discriminator's")
    generator_n_head: int | None = Field(None, gt=0, description="generator attention heads; null: "
                                         "generator_d_model / 64, at least 1")
    generator_d_ff: int | None = Field(None, gt=0, description="hidden width of the generator's MLP; null: 4 * "
                                       "generator_d_model")
    discriminator_weight: float = Field(50.0, gt=0.0, le=1000.0, description="factor of the replaced-token "
                                        "detection loss (ELECTRA: 50)")


class Generator(nn.Module):
    """ELECTRA's generator (see the module docstring): ``(input_ids, attention_mask, document_ids) -> (B, T, vocab)``
    logits. Registered as a task head for its parameters' sake; it reads token ids, so the objective calls it."""

    def __init__(self, embedding: nn.Embedding, opts: TransformerOptions, attention, max_seq_len: int):
        super().__init__()
        width = embedding.embedding_dim
        self._embedding = (embedding,)  # the discriminator's: read, not registered here again
        self.project_in = nn.Linear(width, opts.d_model)
        self.pos_emb = nn.Embedding(max_seq_len, opts.d_model) if opts.positions == "learned" else None
        self.blocks = nn.ModuleList(Block(opts, attention) for _ in range(opts.n_layer))
        self.norm = make_norm(opts, opts.d_model) if opts.norm_position == "pre" else nn.Identity()
        self.project_out = nn.Linear(opts.d_model, width)
        self.out_norm = make_norm(opts, width)
        self.bias = nn.Parameter(torch.zeros(embedding.num_embeddings))
        self.kind = opts.mlp
        self.apply(Transformer._init_weights)

    def forward(self, input_ids, attention_mask=None, document_ids=None):
        embedding = self._embedding[0]
        x = self.project_in(embedding(input_ids))
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(input_ids.shape[1], device=input_ids.device))
        key_padding_mask = attention_mask.bool() if attention_mask is not None else None
        for block in self.blocks:
            x = block(x, key_padding_mask, document_ids)
        x = self.out_norm(gelu(self.project_out(self.norm(x)), self.kind))
        return F.linear(x, embedding.weight, self.bias)


class DetectionHead(nn.Module):
    """The discriminator's head: ``(hidden, attention_mask) -> (B, T)`` logits of "this token was replaced"."""

    def __init__(self, width: int):
        super().__init__()
        self.dense = nn.Linear(width, width)
        self.out = nn.Linear(width, 1)

    def forward(self, hidden, attention_mask=None):
        return self.out(F.gelu(self.dense(hidden))).squeeze(-1)


class Electra:
    """Replaced-token detection with the shared-forward extension (see the module docstring)."""

    heads = ("electra",)
    loss_unit = "token"

    def __init__(self, masking: MaskedLM, generator: Generator, special_ids: set[int], options: ElectraOptions):
        self.masking = masking
        self.generator = generator
        self.options = options
        self.special = torch.tensor(sorted(special_ids))

    def transform(self, batch: dict, training: bool) -> dict:
        """Mask, run the generator, and put its samples in ``input_ids``; adds ``electra_labels`` (1 replaced, 0
        original, IGNORE on padding), ``electra_targets`` (the masked-LM targets) and ``electra_generator_logits``."""
        generator = None if training else torch.Generator().manual_seed(self.options.eval_seed)
        ids, attention_mask = batch["input_ids"], batch.get("attention_mask")
        masked, targets = self.masking.mask(ids, attention_mask, generator)
        logits = self.generator(masked, attention_mask, batch.get("document_ids"))
        selected = targets != IGNORE
        with torch.no_grad():
            scores = logits[selected].float()
            scores[:, self.special.to(scores.device)] = -float("inf")
            noise = torch.rand(scores.shape, generator=generator).to(scores.device).clamp_min(1e-20)
            sampled = (scores - torch.log(-torch.log(noise))).argmax(-1)
        corrupted = ids.masked_scatter(selected, sampled)
        labels = (corrupted != ids).long()
        if attention_mask is not None:
            labels = labels.masked_fill(~attention_mask.bool(), IGNORE)
        return {**batch, "input_ids": corrupted, "electra_labels": labels, "electra_targets": targets,
                "electra_generator_logits": logits}

    def score(self, outputs: dict, batch: dict) -> CombinedResult:
        detection, labels = outputs["electra"], batch["electra_labels"]
        real = labels != IGNORE
        detection_sum = F.binary_cross_entropy_with_logits(detection[real].float(), labels[real].float(),
                                                           reduction="sum")
        logits, targets = batch["electra_generator_logits"], batch["electra_targets"]
        generator_sum = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                                        ignore_index=IGNORE, reduction="sum")
        loss_sum = self.options.discriminator_weight * detection_sum + generator_sum / self.options.mask_prob
        tokens = int(real.sum())
        parts = {"generator": ObjectiveResult(generator_sum, int((targets != IGNORE).sum())),
                 "discriminator": ObjectiveResult(detection_sum, tokens)}
        # Two-class logits (original, replaced) for the metrics.
        return CombinedResult(loss_sum, tokens, logits=torch.stack([torch.zeros_like(detection), detection], -1),
                              targets=labels, ignore_index=IGNORE, parts=parts)


def generator_options(options: ElectraOptions, model) -> TransformerOptions:
    """The generator's block options: the discriminator's (when it is the built-in transformer) at the generator's
    size; a ConfigError when that size does not fit."""
    width = model.d_model
    d_model = options.generator_d_model or max(1, width // 4)
    if d_model > width:
        raise ConfigError(f"objective.generator_d_model ({d_model}) is wider than the discriminator (model.d_model = "
                          f"{width}): ELECTRA's generator must be at most as wide as the model it trains, and works "
                          f"best at a quarter to a half of its width; set objective.generator_d_model to at most "
                          f"{width} (e.g. {max(1, width // 4)}).")
    base = model.opts if isinstance(getattr(model, "opts", None), TransformerOptions) else TransformerOptions()
    update = {"d_model": d_model, "n_head": options.generator_n_head or max(1, d_model // 64),
              "n_layer": options.generator_n_layer or base.n_layer, "d_ff": options.generator_d_ff,
              "n_kv_head": None, "causal": False, "positions": "rope" if base.positions == "rope" else "learned"}
    try:
        return TransformerOptions.model_validate({**base.model_dump(), **update})
    except ValidationError as exc:
        problems = "; ".join(error["msg"] for error in exc.errors(include_url=False))
        raise ConfigError(f"objective: the generator of {d_model} wide with {update['n_head']} heads does not fit "
                          f"({problems}); set objective.generator_d_model and objective.generator_n_head so that "
                          f"the width is a multiple of the heads.") from None


def build(options: ElectraOptions, ctx) -> Electra:
    model = ctx.model
    opts = generator_options(options, model)
    generator = Generator(input_embedding(model), opts, ctx.attention, model.max_seq_len)
    model.add_head(GENERATOR_HEAD, generator)
    model.add_head("electra", DetectionHead(model.d_model))
    return Electra(masked_lm(options, ctx), generator, ctx.tokenizer.special.ids(), options)
