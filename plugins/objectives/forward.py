"""The shared-forward extension of the Objective protocol (see ``Objective`` in hookformer.core.parts): run an
objective that declares ``heads`` and ``score`` (and optionally ``transform``) on a model, alone or combined with
others in one forward pass."""

from __future__ import annotations

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


def run(objective, model, batch: dict) -> ObjectiveResult:
    """``objective(model, batch)`` for an objective with the extension: transform, one forward, score."""
    batch = transform(objective, batch, model.training)
    return objective.score(model_outputs(model, batch, objective.heads), batch)


def batch_field(batch: dict, field: str, objective: str, provider: str):
    """``batch[field]``, or a ConfigError saying which data part makes it (the run's probe forward pass raises it
    before training starts)."""
    if field not in batch:
        raise ConfigError(f'objective {objective} needs the batch field "{field}", which the data does not have '
                          f"(it has: {', '.join(batch)}); {provider}.")
    return batch[field]
