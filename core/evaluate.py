"""Evaluation: the metrics over an examples table, used by the run after every ``eval_every`` steps and by
``hookformer evaluate RUN_DIR``, which scores a saved checkpoint (on the run's own validation split, or on other data
given with ``--set data....``) without training and without writing into the run directory.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable

import torch

from hookformer.core import checkpoint
from hookformer.core.capabilities import CheckedKernel
from hookformer.core.config import RunConfig
from hookformer.core.errors import ConfigError
from hookformer.core.parts import BuildContext
from hookformer.core.prepare import build_context, prepare_data
from hookformer.core.sampler import as_table, table_rows


def build_model(config: RunConfig, ctx: BuildContext):
    """Build the attention kernel (checked against its declared capabilities on every kind of call), the model and
    the objective of ``config`` into ``ctx``; the objective attaches its task heads to the model. Returns
    (model, objective)."""
    choice = config.parts["attention"]
    kernel = choice.build(ctx)
    capabilities = choice.entry.capabilities()
    ctx.attention = kernel if capabilities is None else CheckedKernel(choice.name, kernel, capabilities)
    ctx.model = config.parts["model"].build(ctx).to(ctx.device)
    return ctx.model, config.parts["objective"].build(ctx)


@torch.no_grad()
def evaluate(model, objective, metrics: list, table: dict, *, batch_size: int, max_examples: int | None = None,
             device: str = "cpu", autocast: Callable = contextlib.nullcontext) -> dict[str, float]:
    """The metrics over the first ``max_examples`` rows of ``table`` (all of them when None), in batches, in eval
    mode: ``{"val_<key>": value}``."""
    model.eval()
    for metric in metrics:
        metric.reset()
    rows = len(table["input_ids"]) if max_examples is None else min(len(table["input_ids"]), max_examples)
    for start in range(0, rows, batch_size):
        batch = {name: tensor.to(device, non_blocking=True)
                 for name, tensor in table_rows(table, slice(start, min(start + batch_size, rows))).items()}
        with autocast():
            result = objective(model, batch)
        for metric in metrics:
            metric.update(result)
    values: dict[str, float] = {}
    for metric in metrics:
        values.update({f"val_{key}": value for key, value in metric.compute().items()})
    return values


def evaluate_checkpoint(config: RunConfig, run_dir: Path, checkpoint_dir: Path, *, split: str = "validation",
                        max_examples: int | None = None, device: str = "cpu") -> dict:
    """Score ``checkpoint_dir`` with ``config``'s data, objective and metrics. The run's tokenizer is read from
    ``run_dir``; the data stages build ``split`` of the configured data (which may differ from the training data).
    Returns the metric values with the objective's baselines, the step and the number of examples scored."""
    torch.manual_seed(config.train.seed)
    ctx = build_context(config, run_dir, device)
    prepared = prepare_data(config, ctx)
    ctx.label_names = getattr(prepared.data, "label_names", None)
    split_data = prepared.blocks[split]
    if hasattr(split_data, "next_batch"):
        raise ConfigError(f"the {split} split of this data is streamed; evaluate --split validation instead.")
    table = as_table(split_data)
    model, objective = build_model(config, ctx)
    checkpoint.load_weights(checkpoint_dir, model)
    metrics = [choice.build(ctx) for choice in config.metrics]
    autocast = ((lambda: torch.autocast(device_type=device, dtype=torch.bfloat16)) if config.train.bf16
                else contextlib.nullcontext)
    values = evaluate(model, objective, metrics, table, batch_size=config.train.batch_size,
                      max_examples=max_examples, device=device, autocast=autocast)
    scored = len(table["input_ids"]) if max_examples is None else min(max_examples, len(table["input_ids"]))
    baseline = getattr(objective, "baseline", None)
    baselines = baseline(as_table(prepared.blocks["train"]) if not hasattr(prepared.blocks["train"], "next_batch")
                         else prepared.blocks["train"], table_rows(table, slice(0, scored))) if baseline else {}
    return {"step": checkpoint.manifest(checkpoint_dir)["step"], "checkpoint": str(checkpoint_dir), "split": split,
            "examples": scored, **baselines, **values}
