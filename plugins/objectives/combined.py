"""Objective ``combined``: a weighted sum of registered objectives, trained from one forward pass.

```yaml
objective: {name: combined, objectives: [{name: mlm, weight: 1.0}, {name: sop, weight: 0.5}]}
```

Each entry names an objective (any registered one, resolved through the catalog) with its ``weight`` and its own
options (``{name: mlm, mask_prob: 0.2}``), validated by that objective's options model when the config is validated,
so a mistake is reported with its field path (``objective.objectives.1.weight``) before anything is built.

One forward pass: the parts that implement the shared-forward extension of the Objective protocol (``heads``,
``score``, optional ``transform``; see hookformer.core.parts) share it. Their transforms apply in config order to
the same batch (so every part sees the same corrupted inputs: MLM's masks when ``mlm`` is listed), the model is
called once for the union of their heads, and each part scores the outputs. A part without the extension runs its
own forward pass on the original batch.

The loss, and what gradient accumulation means here: the parts count different items (masked tokens, sequences,
sentences), so their sums cannot simply be added. For each micro-batch of ``B`` examples the result has
``num_items = B`` and ``loss_sum = B * sum_i w_i * loss_sum_i / num_items_i``, so the loss of a micro-batch is
exactly ``sum_i w_i * mean_i`` over that micro-batch. The engine divides the accumulated sum by the total item
count, so a step's gradient is that of the example-weighted average, over its micro-batches (and ranks), of the
micro-batch values. For parts with a fixed number of items per example (``sop``, ``nsp``: one) this equals their
mean over the whole step, as one large batch would give; for parts whose item count varies (``mlm``'s masked
tokens), each micro-batch's mean counts once, as in BERT's reference training, and differs slightly from the mean
over the step's pooled tokens. A part with no item in a micro-batch contributes 0 to it.

Metrics see the first listed part's ``logits`` and ``targets`` (accuracy is that part's) and the combined loss;
every part's own result is in ``CombinedResult.parts`` ({name: ObjectiveResult}) for metrics that report parts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from hookformer.core.config import catalog_of, validate_options
from hookformer.core.errors import PluginError
from hookformer.core.objective import model_outputs, score, shares_forward, transform
from hookformer.core.parts import ObjectiveResult, PartOptions


class WeightedObjective(PartOptions):
    """One part of the sum: ``name`` and ``weight``; every other key is an option of that objective."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    name: str = Field(min_length=1, description="a registered objective (hookformer plugins list)")
    weight: float = Field(1.0, gt=0.0, description="factor of this objective's mean loss in the sum")

    @property
    def options(self) -> dict[str, Any]:
        """The objective's own options (validated with its options model)."""
        return dict(self.model_extra or {})


class CombinedOptions(PartOptions):
    objectives: list[WeightedObjective] = Field(
        min_length=1, description="the objectives to sum: {name, weight, ...that objective's options}; the first "
        "one's predictions go to the metrics")

    @field_validator("objectives", mode="before")
    @classmethod
    def _validate_parts(cls, value: Any, info: ValidationInfo) -> Any:
        """Resolve every entry in the catalog and validate its options with the objective's own options model,
        collecting every problem with its path (the config validator sees only this model)."""
        if not isinstance(value, list):
            return value  # pydantic reports the type
        catalog = catalog_of(info.context, "objective.objectives")
        errors: list[InitErrorDetails] = []
        resolved, names = [], set()
        for i, item in enumerate(value):
            item = {"name": item} if isinstance(item, str) else item
            if not isinstance(item, dict):
                errors.append(_error(PydanticCustomError("dict_type", "Input should be a mapping with a name"),
                                     (i,), item))
                continue
            options = {key: item[key] for key in item if key not in WeightedObjective.model_fields}
            head = {key: item[key] for key in item if key in WeightedObjective.model_fields}
            errors += _collect(lambda: WeightedObjective.model_validate(head), (i,))[1]
            name = head.get("name")
            if not isinstance(name, str) or not name:
                continue
            if name in names:
                errors.append(_error(PydanticCustomError("value_error", "{name} is listed twice; each objective "
                                     "once (its head and result are named after it)", {"name": name}),
                                     (i, "name"), name))
                continue
            names.add(name)
            try:
                model = catalog.get("objective", name).options_model()
            except PluginError as exc:
                errors.append(_error(PydanticCustomError("value_error", "{message}", {"message": str(exc)}),
                                     (i, "name"), name))
                continue
            validated, problems = _collect(lambda: validate_options(model, options, info.context), (i,))
            errors += problems
            resolved.append({**head, **(validated.model_dump() if validated is not None else options)})
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return resolved




def _error(error: PydanticCustomError, loc: tuple, value: Any) -> InitErrorDetails:
    return {"type": error, "loc": loc, "input": value}


def _collect(validate, prefix: tuple) -> tuple[Any, list[InitErrorDetails]]:
    """(``validate()``, no errors), or (None, its errors with their locations under ``prefix``, their types and
    messages kept)."""
    try:
        return validate(), []
    except ValidationError as exc:
        return None, [_error(PydanticCustomError(err["type"], err["msg"].replace("{", "{{").replace("}", "}}")),
                             (*prefix, *err["loc"]), err.get("input")) for err in exc.errors(include_url=False)]


@dataclass
class CombinedResult(ObjectiveResult):
    """The combined loss (see the module docstring), the first part's predictions, and every part's result."""

    parts: dict[str, ObjectiveResult] = field(default_factory=dict)


class Combined:
    loss_unit = "example"  # num_items is the batch size (see the module docstring)

    def __init__(self, parts: list[tuple[str, float, Any]]):
        self.parts = parts  # (name, weight, built objective), in config order

    def __call__(self, model, batch: dict) -> CombinedResult:
        shared = [(name, objective) for name, _, objective in self.parts if shares_forward(objective)]
        results = {}
        if shared:
            corrupted = batch
            for _, objective in shared:
                corrupted = transform(objective, corrupted, model.training)
            outputs = model_outputs(model, corrupted, [head for _, o in shared for head in o.heads])
            results = {name: score(objective, outputs, corrupted, model.training) for name, objective in shared}
        results = {name: results[name] if name in results else objective(model, batch)
                   for name, _, objective in self.parts}
        examples = len(batch["input_ids"])
        loss_sum = examples * sum(weight * results[name].loss_sum / max(1, results[name].num_items)
                                  for name, weight, _ in self.parts)
        first = results[self.parts[0][0]]
        return CombinedResult(loss_sum, examples, logits=first.logits, targets=first.targets,
                              ignore_index=first.ignore_index, parts=results)

    def baseline(self, train, validation: dict) -> dict[str, float]:
        """Every part's baselines as ``KEY[NAME]``, and ``weighted_val_loss``, the weighted sum of the parts' loss
        baselines (comparable to the combined validation loss; only when every part has one)."""
        out, weighted = {}, []
        for name, weight, objective in self.parts:
            values = objective.baseline(train, validation) if hasattr(objective, "baseline") else {}
            out.update({f"{key}[{name}]": value for key, value in values.items()})
            losses = [value for key, value in values.items() if key.endswith("_val_loss")]
            if len(losses) == 1:
                weighted.append(weight * losses[0])
        if len(weighted) == len(self.parts):
            out["weighted_val_loss"] = sum(weighted)
        return out


def build(options: CombinedOptions, ctx) -> Combined:
    return Combined([(part.name, part.weight, ctx.build("objective", {"name": part.name, **part.options},
                                                        f"objective.objectives.{i}"))
                     for i, part in enumerate(options.objectives)])
