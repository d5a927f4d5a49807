"""Entity-level precision, recall and F1 of BIO-tagged token classification, as CoNLL's ``conlleval`` counts them.

The class names (``ctx.label_names``) must be BIO tags: ``O``, ``B-TYPE``, ``I-TYPE``. Each row of the targets is
one sequence; its scored positions, in order, are its words (ignored positions - sub-word continuation pieces,
padding - are dropped, so an entity may run across them). An entity is a maximal span of one type: it starts at a
``B-X``, at an ``I-X`` after ``O``, after another type, or at the start of the sequence (conlleval's convention: a
stray ``I-X`` begins an entity), and runs over the ``I-X`` that follow. ``B-X B-X`` are two adjacent entities.
A predicted entity is correct when an entity of the targets has the same type, start and end.

precision = correct / predicted entities, recall = correct / target entities, F1 = 2 correct / (predicted +
target entities), each 0 where its denominator is 0 (scikit-learn's and seqeval's ``zero_division=0``; the Perl
conlleval also reports precision 0 when nothing is predicted). Only the three counts are kept across ``update``
calls.
"""

from __future__ import annotations

import torch

from hookformer.core.errors import ConfigError
from hookformer.plugins.metrics.scored import precision_recall_f1, rows

OUTSIDE, BEGIN, INSIDE = 0, 1, 2


def parse_bio(label_names: list[str] | None) -> tuple[list[int], list[int]]:
    """(prefix, entity type id) per class id: prefix is OUTSIDE, BEGIN or INSIDE; ``O`` has type -1.

    Raises ConfigError when the names are missing or are not BIO tags.
    """
    if label_names is None:
        raise ConfigError(
            "metric entity_f1 needs the names of the data's labels (BIO tags such as O, B-PER, I-PER), and the data "
            "stage gives none: use entity_f1 with a labeled token-classification data source, or choose f1 or "
            "accuracy for data without BIO tags.")
    prefixes, types, type_ids = [], [], {}
    bad = []
    for class_id, name in enumerate(label_names):
        prefix, dash, kind = str(name).partition("-")
        if name == "O":
            prefixes.append(OUTSIDE)
            types.append(-1)
        elif dash and kind and prefix in ("B", "I"):
            prefixes.append(BEGIN if prefix == "B" else INSIDE)
            types.append(type_ids.setdefault(kind, len(type_ids)))
        else:
            bad.append(f"{name!r} (class {class_id})")
    if bad or not type_ids:
        found = (f"include {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}" if bad
                 else f"{list(label_names)!r} have no B- or I- tag")
        raise ConfigError(
            f"metric entity_f1 needs BIO label names (O, B-TYPE, I-TYPE), but the data's labels {found}: relabel "
            f"the data with BIO tags, or choose f1 or accuracy for labels that do not mark entity spans.")
    return prefixes, types


class EntityF1:
    def __init__(self, label_names: list[str]):
        prefixes, types = parse_bio(label_names)
        self.prefix = torch.tensor(prefixes)
        self.type = torch.tensor(types)
        self.num_types = max(types) + 1

    def reset(self) -> None:
        self.correct = 0
        self.predicted = 0
        self.actual = 0

    def update(self, result) -> None:
        if result.logits is None or result.targets is None:
            return
        if result.logits.shape[-1] != len(self.prefix):
            raise ConfigError(
                f"metric entity_f1: the model scores {result.logits.shape[-1]} classes but the data names "
                f"{len(self.prefix)} labels; the classification head must have one output per label.")
        predictions, targets, scored = rows(result)
        row = torch.arange(len(targets), device=targets.device).unsqueeze(1).expand_as(targets)[scored]
        actual = self.entities(targets[scored], row)
        predicted = self.entities(predictions[scored], row)
        self.correct += int(torch.isin(predicted, actual).sum())
        self.predicted += len(predicted)
        self.actual += len(actual)

    def entities(self, tags: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
        """One int64 key per entity, encoding (start, end, type), of the scored tags of a batch laid end to end
        (``row``: the sequence of each position; an entity never crosses a row boundary)."""
        prefix, kind = self.prefix.to(tags.device)[tags], self.type.to(tags.device)[tags]
        inside = prefix != OUTSIDE
        row_start = torch.ones_like(inside)
        row_start[1:] = row[1:] != row[:-1]
        # Position i continues the entity of i - 1 when i is I-X, i - 1 is B-X or I-X of the same type (O's type
        # -1 is no entity's) and in the same row; every other non-O position starts an entity.
        continues = (prefix == INSIDE) & (kind == kind.roll(1)) & ~row_start
        starts = (inside & ~continues).nonzero().squeeze(1)
        # An entity ends where the next position does not continue it (row starts never continue, so the roll's
        # wrap-around from the last position to the first is harmless).
        ends = (inside & ~continues.roll(-1)).nonzero().squeeze(1)
        n = len(tags)
        return (starts * n + ends) * self.num_types + kind[starts]

    def compute(self) -> dict[str, float]:
        precision, recall, f1 = precision_recall_f1(self.correct, self.predicted, self.actual)
        return {"entity_f1": float(f1), "entity_precision": float(precision), "entity_recall": float(recall)}


def build(options, ctx) -> EntityF1:
    metric = EntityF1(ctx.label_names)
    metric.reset()
    return metric
