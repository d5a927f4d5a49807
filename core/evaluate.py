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
from hookformer.core.parts import ObjectiveResult
from hookformer.core.sampler import as_table, table_rows

IGNORE = -100


@torch.no_grad()
def evaluate(model, objective, metrics: list, table: dict, *, batch_size: int, max_examples: int | None = None,
             device: str = "cpu", autocast: Callable = contextlib.nullcontext, tokenizer=None) -> dict[str, float]:
    """The metrics over the first ``max_examples`` rows of ``table`` (all of them when None), in batches, in eval
    mode: ``{"val_<key>": value}``.

    A metric that scores generated text declares ``generation`` (a :class:`~hookformer.core.generate.Decoding`) and
    ``max_examples``: it is also updated with a result whose ``predictions`` are the model's outputs for the first
    ``max_examples`` of the evaluated rows, decoded by ``tokenizer``, and whose ``references`` are those rows'
    labels (see :func:`generated_texts`). Metrics asking for the same generation share it."""
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
    generations: dict[str, ObjectiveResult] = {}
    for metric in metrics:
        decoding = getattr(metric, "generation", None)
        if decoding is None:
            continue
        if tokenizer is None:
            raise ConfigError(f"metric {type(metric).__name__} scores generated text, and this evaluation has no "
                              "tokenizer to decode it with.")
        key = repr((decoding, metric.max_examples))  # a Decoding need not be hashable
        if key not in generations:
            with autocast():
                predictions, references = generated_texts(model, table, decoding, tokenizer,
                                                          max_examples=min(metric.max_examples, rows),
                                                          batch_size=batch_size, device=device)
            generations[key] = ObjectiveResult(torch.zeros(()), len(predictions), predictions=predictions,
                                               references=references)
        metric.update(generations[key])
    values: dict[str, float] = {}
    for metric in metrics:
        values.update({f"val_{key}": value for key, value in metric.compute().items()})
    return values


def generated_texts(model, table: dict, decoding, tokenizer, *, max_examples: int, batch_size: int,
                    device: str = "cpu") -> tuple[list[str], list[list[str]]]:
    """(predictions, references) for the first ``max_examples`` rows of ``table``, which must have ``labels``
    (-100 where nothing is to be predicted). An encoder-decoder (``model.encoder_decoder``) reads each row's source
    (``input_ids`` where ``attention_mask`` is 1) and generates from the beginning-of-sequence token; a decoder
    continues each row's prompt (the tokens before the first label). The reference is the labeled tokens, decoded
    (decoding drops the end-of-sequence token; generation already stops there)."""
    from hookformer.core.generate import generate  # the evaluation of metrics of generated text only

    if "labels" not in table:
        raise ConfigError(f"a metric of generated text needs reference texts: data whose examples have labels "
                          f"(the target of data pairs, the response of prompt_response); this data has only "
                          f"{', '.join(table)}.")
    encoder_decoder = getattr(model, "encoder_decoder", False)
    rows = min(max_examples, len(table["input_ids"]))
    predictions, references = [], []
    for start in range(0, rows, batch_size):
        batch = table_rows(table, slice(start, min(start + batch_size, rows)))
        mask = batch.get("attention_mask", torch.ones_like(batch["input_ids"])).bool()
        labels = batch["labels"]
        if encoder_decoder:
            sources = [ids[keep].tolist() for ids, keep in zip(batch["input_ids"], mask)]
            prompts = [[tokenizer.special.bos] for _ in sources]
        else:
            sources = None
            prompts = [_prompt(ids, row, keep) for ids, row, keep in zip(batch["input_ids"], labels, mask)]
        outputs = generate(model, prompts, decoding, tokenizer=tokenizer, sources=sources, device=device)
        predictions += [tokenizer.decode(ids) for ids in outputs]
        references += [[tokenizer.decode(row[row != IGNORE].tolist())] for row in labels]
    return predictions, references


def _prompt(ids: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor) -> list[int]:
    """A decoder's prompt: the tokens before the first labeled one (all real tokens when none is labeled)."""
    labeled = (labels != IGNORE).nonzero()
    return ids[:int(labeled[0]) if len(labeled) else int(keep.sum())].tolist()


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
                      max_examples=max_examples, device=device, autocast=autocast, tokenizer=assembly.tokenizer())
    scored = len(table["input_ids"]) if max_examples is None else min(max_examples, len(table["input_ids"]))
    baseline = getattr(objective, "baseline", None)
    train = splits["train"] if hasattr(splits["train"], "next_batch") else as_table(splits["train"])
    baselines = baseline(train, table_rows(table, slice(0, scored))) if baseline else {}
    return {"step": checkpoint.manifest(checkpoint_dir)["step"], "checkpoint": str(checkpoint_dir), "split": split,
            "examples": scored, **baselines, **values}
