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
from hookformer.core.assemble import Assembly
from hookformer.core.config import RunConfig
from hookformer.core.errors import ConfigError
from hookformer.core.objective import compute
from hookformer.core.sampler import as_table, table_rows


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
            result = compute(objective, model, batch)
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
    checkpoint.verify(checkpoint_dir)  # before its manifest decides the model's shapes
    assembly = Assembly(config, run_dir, device=device, checkpoint=checkpoint_dir)
    splits = assembly.prepare_data()
    if hasattr(splits[split], "next_batch"):
        raise ConfigError(f"the {split} split of this data is streamed; evaluate --split validation instead.")
    table = as_table(splits[split])
    model, objective = assembly.model(), assembly.objective()
    checkpoint.load_weights(checkpoint_dir, model)
    autocast = ((lambda: torch.autocast(device_type=device, dtype=torch.bfloat16)) if config.train.bf16
                else contextlib.nullcontext)
    values = evaluate(model, objective, assembly.metrics(), table, batch_size=config.train.batch_size,
                      max_examples=max_examples, device=device, autocast=autocast)
    scored = len(table["input_ids"]) if max_examples is None else min(max_examples, len(table["input_ids"]))
    baseline = getattr(objective, "baseline", None)
    train = splits["train"] if hasattr(splits["train"], "next_batch") else as_table(splits["train"])
    baselines = baseline(train, table_rows(table, slice(0, scored))) if baseline else {}
    return {"step": checkpoint.manifest(checkpoint_dir)["step"], "checkpoint": str(checkpoint_dir), "split": split,
            "examples": scored, **baselines, **values}
