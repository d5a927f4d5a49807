"""Hook part ``lora``: low-rank adapters (LoRA, Hu et al. 2021) on the model's linear layers, trained with the rest
of the model frozen.

Its build wrapper (``hookformer_build``) freezes every parameter of the model part and gives each targeted
``nn.Linear`` two extra parameters, ``<module>.lora_A`` (rank x in, random) and ``<module>.lora_B`` (out x rank,
zeros), and a forward hook that adds ``alpha / rank * B (A dropout(x))`` to its output. The model part's own
parameters keep their names, so the run's checkpoints hold the base weights and the adapters side by side, and a
pretrained checkpoint (``train.init_from``) loads into it with the adapters left as initialised
(``hookformer_added_tensors``). Task heads that the objective attaches afterwards stay trainable.

With every checkpoint it writes the adapters alone, ``adapter_model.safetensors`` and ``adapter_config.json``
(:func:`save_adapters`, read back by :func:`load_adapters` or the option ``adapters_from``), and ``hookformer
export`` gets the merged model, ``W + alpha / rank * B A`` (``hookformer_export_model``), whose weights are those
of the plain model part.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from hookformer.core.errors import CheckpointError, ConfigError
from hookformer.core.hookspecs import hookimpl
from hookformer.core.parts import PartOptions, RunView

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
#: The names of the two adapter parameters on each adapted linear layer.
A, B = "lora_A", "lora_B"


class LoraOptions(PartOptions):
    rank: int = Field(8, ge=1, le=4096, description="rank r of each adapter: A is r x in_features, B out_features x r")
    alpha: float = Field(16.0, gt=0, le=1e6, description="scale numerator: the adapter's output is multiplied by "
                                                          "alpha / rank")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the adapters' input, in training only")
    targets: list[str] = Field(["*.attn.qkv", "*.attn.proj"], min_length=1,
                               description="fnmatch patterns of the names of the linear layers to adapt (e.g. "
                                           "blocks.*.attn.qkv, *.mlp.*); each must match at least one")
    adapters_from: str | None = Field(None, description="start the adapters from those saved in this folder (a "
                                                        "checkpoint folder of a LoRA run: adapter_model.safetensors)")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def _add_low_rank(scale: float, dropout: float):
    def hook(module: nn.Linear, args: tuple, output: torch.Tensor) -> torch.Tensor:
        x = args[0]
        if dropout:
            x = F.dropout(x, dropout, module.training)
        return output + F.linear(F.linear(x, getattr(module, A)), getattr(module, B)) * scale
    return hook


def targeted(model: nn.Module, patterns: list[str]) -> dict[str, nn.Linear]:
    """The linear layers of ``model`` whose names match any of ``patterns``; a ConfigError names a pattern that
    matches none, with the linear layers there are (block indices shown as ``*``)."""
    linear = {name: module for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    chosen = {}
    for index, pattern in enumerate(patterns):
        matched = {name: module for name, module in linear.items() if fnmatch.fnmatchcase(name, pattern)}
        if not matched:
            candidates = sorted({re.sub(r"(?<=\.)\d+(?=\.|$)", "*", name) for name in linear})
            raise ConfigError(f'hooks lora: targets[{index}] "{pattern}" matches no linear layer of the model; its '
                              f"linear layers are: {', '.join(candidates) or 'none'}.")
        chosen.update(matched)
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    for name, module in chosen.items():
        tied = [other for other in names[id(module.weight)] if other != f"{name}.weight"]
        if tied:
            raise ConfigError(f"hooks lora: targets match {name}, whose weight is also {tied[0]} (tied): merged, its "
                              f"adapter would change that too. Leave {name} out of the targets.")
    return chosen


class Lora:
    """The built hook part: adapts the model when it is built, saves the adapters with each checkpoint, merges them
    for export."""

    def __init__(self, options: LoraOptions):
        self.options = options
        self._hooks: dict[nn.Linear, torch.utils.hooks.RemovableHandle] = {}

    # -- build ----------------------------------------------------------------------------------------------------
    @hookimpl(wrapper=True)
    def hookformer_build(self, stage: str, ctx):
        part = yield
        if stage == "model":
            if ctx.train is not None and ctx.train.freeze_backbone:
                raise ConfigError("hooks lora trains the adapters with the backbone frozen already; "
                                  "train.freeze_backbone would freeze the adapters too: leave it false.")
            self.attach(part)
            if self.options.adapters_from is not None:
                load_adapters(part, Path(self.options.adapters_from))
        return part

    def attach(self, model: nn.Module) -> None:
        """Freeze ``model`` and give each targeted linear layer its adapter (see the module docstring)."""
        modules = targeted(model, self.options.targets)
        for param in model.parameters():
            param.requires_grad_(False)
        rank = self.options.rank
        for module in modules.values():
            weight = module.weight
            a = nn.Parameter(torch.empty(rank, module.in_features, device=weight.device, dtype=weight.dtype))
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # nn.Linear's own initialisation, as in the LoRA paper's code
            module.register_parameter(A, a)
            module.register_parameter(B, nn.Parameter(torch.zeros(module.out_features, rank, device=weight.device,
                                                                  dtype=weight.dtype)))
            self._hooks[module] = module.register_forward_hook(_add_low_rank(self.options.scale,
                                                                             self.options.dropout))

    @hookimpl
    def hookformer_added_tensors(self, model: nn.Module) -> list[str]:
        return list(adapter_tensors(model))

    @hookimpl
    def hookformer_export_model(self, model: nn.Module) -> None:
        """Merge: W += alpha / rank * B A, then drop the adapters and their forward hooks."""
        with torch.no_grad():
            for module in list(self._hooks):
                delta = getattr(module, B).float() @ getattr(module, A).float()
                module.weight.add_((delta * self.options.scale).to(module.weight.dtype))
                self._hooks.pop(module).remove()
                del module._parameters[A], module._parameters[B]

    # -- run events -----------------------------------------------------------------------------------------------
    @hookimpl
    def hookformer_run_start(self, run: RunView) -> None:
        total = sum(p.numel() for p in run.model.parameters())
        trainable = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
        run.log(f"lora: {len(self._hooks)} adapted layers, rank {self.options.rank}; {trainable:,} of {total:,} "
                f"parameters trainable ({100 * trainable / max(total, 1):.2f}%)")

    @hookimpl
    def hookformer_checkpoint_saved(self, run: RunView, path: Path) -> None:
        save_adapters(run.model, path, self.options, run.step)


def adapter_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter parameters of ``model`` by name (``<module>.lora_A``, ``<module>.lora_B``)."""
    return {name: param for name, param in model.named_parameters()
            if name.rpartition(".")[2] in (A, B)}


def save_adapters(model: nn.Module, folder: Path, options: LoraOptions, step: int) -> Path:
    """Write ``folder/adapter_model.safetensors`` (the adapters alone) and ``folder/adapter_config.json``, each
    replaced atomically. Returns the weights' path."""
    from safetensors.torch import save_file

    from hookformer.core.checkpoint import write_atomically

    tensors = {name: param.detach().contiguous() for name, param in adapter_tensors(model).items()}
    path = Path(folder) / ADAPTER_WEIGHTS
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    modules = sorted({name.rpartition(".")[0] for name in tensors})
    write_atomically(Path(folder) / ADAPTER_CONFIG, json.dumps(
        {"kind": "lora", "rank": options.rank, "alpha": options.alpha, "dropout": options.dropout,
         "targets": options.targets, "modules": modules, "step": step}, indent=2))
    return path


@torch.no_grad()
def load_adapters(model: nn.Module, folder: Path) -> None:
    """Copy the adapters saved in ``folder`` (see :func:`save_adapters`) into ``model``'s, which must be the same
    layers with the same rank; else a CheckpointError names what differs."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(folder) / ADAPTER_WEIGHTS
    try:
        saved = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"hooks lora: adapters_from: cannot read {path} ({exc}); name a checkpoint folder of "
                              f"a LoRA run.") from None
    own = adapter_tensors(model)
    missing, extra = sorted(own.keys() - saved.keys()), sorted(saved.keys() - own.keys())
    wrong = [f"{name} {tuple(saved[name].shape)} vs {tuple(own[name].shape)}" for name in own.keys() & saved.keys()
             if saved[name].shape != own[name].shape]
    if missing or extra or wrong:
        raise CheckpointError(f"hooks lora: the adapters in {path} are not this model's (missing: {missing[:4]}, "
                              f"not in the model: {extra[:4]}, other shapes: {wrong[:4]}); use the targets and rank "
                              f"they were trained with.")
    for name, tensor in own.items():
        tensor.copy_(saved[name])


def build(options: LoraOptions, ctx) -> Lora:
    return Lora(options)
