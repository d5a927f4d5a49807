"""How the engine runs an objective (see ``Objective`` in hookformer.core.parts): :func:`compute` is the one call
training, evaluation and the probe pass make. An objective with the shared-forward extension (``heads``, ``score``,
optional ``transform``) is run by the engine (transform, one forward pass, score); any other is called. The pieces
are public so that an objective that combines others (``combined``) runs its parts by the same rules."""

from __future__ import annotations

import functools
import inspect

from hookformer.core.errors import ConfigError
from hookformer.core.parts import ObjectiveResult, model_inputs


def shares_forward(objective) -> bool:
    """Whether ``objective`` implements the extension, so that it can share a forward pass."""
    return hasattr(objective, "heads") and hasattr(objective, "score")


def transform(objective, batch: dict, training: bool) -> dict:
    """The batch after the objective's input corruption (unchanged when it has none)."""
    corrupt = getattr(objective, "transform", None)
    return batch if corrupt is None else corrupt(batch, training=training)


def model_outputs(model, batch: dict, heads) -> dict:
    """``{head: output}`` of one forward pass. A pass that needs the language-model logits only calls the model
    without ``heads``, so a model that returns nothing but logits still serves it."""
    heads = list(dict.fromkeys(heads))
    if heads == ["lm"]:
        return {"lm": model(batch["input_ids"], **model_inputs(batch))}
    return model(batch["input_ids"], **model_inputs(batch), heads=heads)


def compute(objective, model, batch: dict) -> ObjectiveResult:
    """The objective's result for ``batch``: with the extension, transform, one forward pass, score; without it,
    ``objective(model, batch)``."""
    if not shares_forward(objective):
        return objective(model, batch)
    batch = transform(objective, batch, model.training)
    return score(objective, model_outputs(model, batch, objective.heads), batch, model.training)


def score(objective, outputs: dict, batch: dict, training: bool) -> ObjectiveResult:
    """``objective.score(outputs, batch)``, told whether the model is training when its ``score`` takes a
    ``training`` argument (so that, e.g., label smoothing shapes the training loss but never ``val_loss``)."""
    if _takes_training(type(objective).score):
        return objective.score(outputs, batch, training=training)
    return objective.score(outputs, batch)


@functools.lru_cache(maxsize=None)
def _takes_training(method) -> bool:
    return "training" in inspect.signature(method).parameters


def batch_field(batch: dict, field: str, objective: str, provider: str):
    """``batch[field]``, or a ConfigError saying which data part makes it (the run's probe forward pass raises it
    before training starts)."""
    if field not in batch:
        raise ConfigError(f'objective {objective} needs the batch field "{field}", which the data does not have '
                          f"(it has: {', '.join(batch)}); {provider}.")
    return batch[field]
