"""Parameter groups, built by the engine for every optimizer (see ``Optimizer`` in hookformer.core.parts), so that
weight-decay exclusions and the task heads' learning rate (``train.head_lr``) work with any optimizer part."""

from __future__ import annotations

import torch.nn as nn

from hookformer.core.errors import ConfigError

#: Parameters whose name starts with this belong to a task head (see the Model protocol in hookformer.core.parts).
HEAD_PREFIX = "heads."


def param_groups(model: nn.Module, head_lr: float | None = None) -> tuple[dict, ...]:
    """The trainable parameters of ``model``, each once (tied ones under their first name), in groups: weights of
    linear layers (``"decay": True``) and everything else, norms, biases and embeddings (``"decay": False``). With
    ``head_lr``, the task heads (``heads.*``) get two groups of their own with ``"lr": head_lr`` (a schedule scales
    each group's own lr). Empty groups are left out."""
    no_decay_ids: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not isinstance(module, nn.Linear) or name == "bias":
                no_decay_ids.add(id(param))
    split_heads = head_lr is not None
    groups: dict[tuple[bool, bool], list] = {(head, decay): [] for head in (False, True) for decay in (True, False)}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups[(split_heads and name.startswith(HEAD_PREFIX), id(param) not in no_decay_ids)].append(param)
    return tuple({"params": params, "decay": decay, **({"lr": head_lr} if head else {})}
                 for (head, decay), params in groups.items() if params)


def with_weight_decay(groups, weight_decay: float, decay_all: bool = False) -> list[dict]:
    """``groups`` with each group's ``weight_decay``: ``weight_decay`` where the engine marked ``"decay"`` (or
    everywhere with ``decay_all``), 0 elsewhere."""
    return [{**group, "weight_decay": weight_decay if (group["decay"] or decay_all) else 0.0} for group in groups]


def check_optimizer(optimizer, model: nn.Module, head_lr: float | None, name: str) -> None:
    """ConfigError unless ``optimizer`` (the part ``name``) holds every trainable parameter of ``model`` once and,
    with ``head_lr``, the task heads at that learning rate: an optimizer that ignored the engine's groups would
    otherwise train silently without them."""
    held: dict[int, dict] = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            if id(param) in held:
                raise ConfigError(f'optimizer "{name}" holds a parameter twice; build it from ctx.param_groups.')
            held[id(param)] = group
    trainable = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    missing = [n for i, n in trainable.items() if i not in held]
    if missing:
        raise ConfigError(f'optimizer "{name}" leaves out {len(missing)} trainable parameters ({", ".join(missing[:3])}'
                          f'{"..." if len(missing) > 3 else ""}); build it from ctx.param_groups.')
    if head_lr is not None:
        wrong = [n for i, n in trainable.items() if n.startswith(HEAD_PREFIX) and held[i].get("lr") != head_lr]
        if wrong:
            raise ConfigError(f'train.head_lr is {head_lr}, but optimizer "{name}" trains {wrong[0]} at another '
                              f'learning rate: build it from ctx.param_groups (which carry the heads\' "lr").')
