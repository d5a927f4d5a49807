"""Data-parallel training under torchrun: the process group, the model wrapper (DDP or FSDP2) and checkpoint state.

A run launched by ``torchrun`` reads RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous variables torchrun sets; a run
started without it is one process and ``World()`` makes every collective a no-op. Every rank draws the same global
batch from the sampler and trains on its own slice, so the data position is the same on every rank and a checkpoint
can be resumed with another number of ranks. Checkpoints hold full (unsharded) weights and optimizer state, keyed by
parameter name, written by rank 0 in the single-process format.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn

from hookformer.core.config import DistributedConfig
from hookformer.core.errors import ConfigError, HookformerError


@dataclass(frozen=True)
class World:
    """This process's place in the job. The default is a single process: every collective is a no-op."""

    rank: int = 0
    size: int = 1
    strategy: str = "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.strategy == "fsdp"

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def sum(self, *values: float) -> list[float]:
        """Each value summed over the ranks (float64, so item counts stay exact)."""
        if self.size == 1:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if self.size == 1:
            return value
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (it may write caches and trained tokenizers); the others then find them."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def check_same(self, what: str, value: Any) -> None:
        """Fail on every rank when ``value`` (e.g. the resolved config) differs between ranks."""
        if self.size == 1:
            return
        digest = hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
        digests: list[str] = [""] * self.size
        dist.all_gather_object(digests, digest)
        differing = [rank for rank, d in enumerate(digests) if d != digests[0]]
        if differing:
            raise ConfigError(f"the {what} differs between ranks: ranks {differing} disagree with rank 0. Start "
                              f"every rank with the same config, overrides and hookformer version.")

    # -- the model ------------------------------------------------------------------------------------------------
    def wrap(self, model: nn.Module, device: str) -> nn.Module:
        """The module to train through. FSDP2 shards ``model`` in place (each element of every ModuleList, e.g.
        the Transformer blocks, is one unit, then the root); DDP returns a wrapper around it."""
        if self.strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            return DistributedDataParallel(model, device_ids=[torch.cuda.current_device()] if device == "cuda"
                                           else None)
        if self.strategy == "fsdp":
            from torch.distributed.fsdp import fully_shard

            for module in list(model.modules()):
                if isinstance(module, nn.ModuleList):
                    for child in module:
                        fully_shard(child)
            fully_shard(model)
        return model

    def no_sync(self, train_model: nn.Module):
        """Skip DDP's gradient all-reduce on a micro-batch that is not the last of a step (it runs on the last)."""
        return train_model.no_sync() if self.strategy == "ddp" else contextlib.nullcontext()

    def checkpoint_weights(self, model: nn.Module) -> nn.Module | dict[str, torch.Tensor]:
        """What rank 0 saves: the model itself, or under FSDP2 its gathered full weights with tied parameters named
        once (a collective; the other ranks get an empty dict)."""
        if not self.sharded:
            return model
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        seen: set[int] = set()
        aliases = set()
        for name, param in model.named_parameters(remove_duplicate=False):
            if id(param) in seen:
                aliases.add(name)
            seen.add(id(param))
        return {name: tensor for name, tensor in state.items() if name not in aliases}

    def optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        """The full optimizer state keyed by parameter name, so that any strategy and number of ranks can load it
        (a collective under FSDP2; other ranks get an empty dict)."""
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            return get_optimizer_state_dict(model, optimizer,
                                            options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        state = optimizer.state_dict()
        names = _param_names(model, optimizer)
        return {"state": {names[i]: value for i, value in state["state"].items()},
                "param_groups": [{**group, "params": [names[i] for i in group["params"]]}
                                 for group in state["param_groups"]]}

    def load_optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
            return
        index = {name: i for i, name in enumerate(_param_names(model, optimizer))}
        try:
            optimizer.load_state_dict({
                "state": {index[name]: value for name, value in state["state"].items()},
                "param_groups": [{**group, "params": [index[name] for name in group["params"]]}
                                 for group in state["param_groups"]]})
        except KeyError as exc:
            raise ValueError(f"the optimizer state names parameter {exc} that the model does not have") from None


def _param_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The name of each optimizer parameter, in the optimizer's order (its state-dict indices)."""
    names = {id(param): name for name, param in model.named_parameters()}
    return [names[id(param)] for group in optimizer.param_groups for param in group["params"]]


def init(config: DistributedConfig, device: str) -> World:
    """Join the job torchrun started (nccl on CUDA, gloo on CPU); a process not started by torchrun is alone."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        if config.strategy != "none":
            print(f"hookformer: train.distributed.strategy is {config.strategy}, but this is one process (not started "
                  f"by torchrun or --nproc): training without data parallelism", file=sys.stderr)
        return World()
    if config.strategy == "none":
        raise ConfigError(f"{size} processes were started (WORLD_SIZE={size}) but train.distributed.strategy is "
                          f"none; set it to ddp or fsdp.")
    if device == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo",
                                timeout=timedelta(seconds=config.timeout_s))
    world = World(dist.get_rank(), dist.get_world_size(), config.strategy)
    if world.size != size:
        raise HookformerError(f"WORLD_SIZE is {size} but the process group has {world.size} ranks.")
    return world


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
