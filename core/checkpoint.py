"""Checkpoints: safetensors weights plus trainer state (optimizer, scheduler, RNG, data position), written atomically.

Layout: ``RUN_DIR/checkpoints/step_000400/{model.safetensors, trainer_state.pt, manifest.json}``,
``RUN_DIR/checkpoints/latest`` naming the newest complete checkpoint and, with early stopping,
``RUN_DIR/checkpoints/best`` naming the best evaluation's (kept whatever ``keep_checkpoints`` says). A checkpoint is
written into a temporary folder, flushed to disk, and renamed into place; only then do the pointers move (each
replaced atomically). A crash at any point leaves the previous checkpoint and the pointers untouched.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_model, save_file, save_model

from hookformer.core.errors import CheckpointError

WEIGHTS = "model.safetensors"
STATE = "trainer_state.pt"
MANIFEST = "manifest.json"


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see either the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    _fsync(tmp)
    os.replace(tmp, path)


def save(run_dir: Path, step: int, weights: torch.nn.Module | dict[str, torch.Tensor], state: dict,
         keep: int, meta: dict | None = None, best: bool = False) -> Path:
    """Write the checkpoint of ``step``, point ``latest`` (and with ``best``, ``best``) at it, and keep only the
    ``keep`` newest plus the best. ``weights`` is the model, or its full state dict with tied parameters named once
    (gathered from the ranks of a sharded run). ``meta`` goes into the manifest (what rebuilding the model needs
    without the data, e.g. the block size)."""
    root = checkpoints_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        if isinstance(weights, torch.nn.Module):
            save_model(weights, str(tmp / WEIGHTS))  # handles tied weights (stored once)
        else:
            save_file({name: tensor.contiguous() for name, tensor in weights.items()}, str(tmp / WEIGHTS))
        torch.save(state, tmp / STATE)
        manifest = {"step": step, "files": [WEIGHTS, STATE], **(meta or {})}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        for name in (WEIGHTS, STATE, MANIFEST):
            _fsync(tmp / name)
        if final.exists():  # the same step saved again (e.g. a resumed run ends where it started)
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_atomically(root / "latest", final.name)
    if best:
        write_atomically(root / "best", final.name)
    kept = {final, _pointed(root / "best")}
    for old in sorted(p for p in root.glob("step_*") if p.is_dir())[:-keep]:
        if old not in kept:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _pointed(pointer: Path) -> Path | None:
    """The checkpoint a pointer file (``latest``, ``best``) names, or None without the file."""
    return pointer.parent / pointer.read_text().strip() if pointer.is_file() else None


def latest(run_dir: Path) -> Path:
    """The newest complete checkpoint of a run."""
    pointer = checkpoints_dir(run_dir) / "latest"
    path = _pointed(pointer)
    if path is None:
        raise CheckpointError(f"{run_dir} has no checkpoint to resume from ({pointer} is missing). A run writes one "
                              f"every train.checkpoint_every steps and at its end.")
    if not (path / MANIFEST).is_file():
        raise CheckpointError(f"checkpoint {path} named by {pointer} is incomplete (no {MANIFEST}).")
    return path


def best(run_dir: Path) -> Path | None:
    """The best evaluation's checkpoint of a run with early stopping, or None before its first evaluation."""
    return _pointed(checkpoints_dir(run_dir) / "best")


def manifest(path: Path) -> dict:
    return json.loads((path / MANIFEST).read_text())


def load_weights(path: Path, model: torch.nn.Module) -> None:
    """Load weights into ``model`` strictly: names and shapes must match."""
    try:
        missing, unexpected = load_model(model, str(path / WEIGHTS), strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"the weights in {path / WEIGHTS} do not fit the model built from the config: "
                              f"{str(exc).splitlines()[0]}") from None
    if missing or unexpected:
        raise CheckpointError(f"the weights in {path / WEIGHTS} do not match the model built from the config "
                              f"(missing: {sorted(missing)[:5]}, unexpected: {sorted(unexpected)[:5]}).")


def load(path: Path, model: torch.nn.Module) -> dict:
    """Load weights into ``model`` (see load_weights) and return the trainer state."""
    load_weights(path, model)
    return torch.load(path / STATE, weights_only=True)


def load_pretrained(path: Path, model: torch.nn.Module) -> tuple[list[str], list[str]]:
    """Load a pretrained checkpoint into ``model`` to fine-tune it. Every tensor of the backbone (everything but the
    task heads, ``heads.<name>.*``) must be in the checkpoint with the model's shape, and the checkpoint must hold no
    backbone tensor the model lacks; else a CheckpointError names each tensor with both shapes and the config fields
    that decide them. A task head the checkpoint lacks, or holds with other shapes, keeps its fresh weights; a head
    only in the checkpoint is not used. Returns (heads kept fresh, heads of the checkpoint not used)."""
    from safetensors import safe_open

    with safe_open(str(path / WEIGHTS), framework="pt") as handle:
        saved = {name: handle.get_tensor(name) for name in handle.keys()}
    own = model.state_dict()
    # Tied tensors (the output projection and the token embedding) are one object saved under one of their names.
    objects = {name: id(tensor) for name, tensor in (*model.named_parameters(remove_duplicate=False),
                                                      *model.named_buffers(remove_duplicate=False))}
    groups: dict[object, list[str]] = {}
    for name in own:
        groups.setdefault(objects.get(name, name), []).append(name)
    load, fresh, problems, shapes = {}, set(), [], []
    for names in groups.values():
        is_head = all(name.startswith("heads.") for name in names)
        found = next((name for name in names if name in saved), None)
        if found is not None and saved[found].shape == own[found].shape:
            load[found] = saved[found]
        elif is_head:
            fresh.add(_head_of(names[0]))
        elif found is None:
            problems.append(f"{names[0]}: not in the checkpoint")
        else:
            shapes.append((tuple(saved[found].shape), tuple(own[found].shape)))
            problems.append(f"{names[0]}: checkpoint {shapes[-1][0]} vs model {shapes[-1][1]}")
    unused = [name for name in saved if name not in own]
    problems += [f"{name}: in the checkpoint, not in the model" for name in unused if not name.startswith("heads.")]
    if problems:
        listed = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")
        raise CheckpointError(f"the pretrained weights in {path / WEIGHTS} (train.init_from) do not fit the model "
                              f"built from this config: {listed}. {_shape_hint(model, shapes)}")
    model.load_state_dict(load, strict=False)
    skipped = {_head_of(name) for name in unused}
    return sorted(fresh), sorted(skipped)


def _head_of(name: str) -> str:
    """``heads.<name>`` of a head's tensor name."""
    return ".".join(name.split(".")[:2])


def _shape_hint(model: torch.nn.Module, shapes: list[tuple[tuple, tuple]]) -> str:
    """Which config fields to change for mismatched (checkpoint, model) shapes."""
    vocab, positions = getattr(model, "vocab_size", None), getattr(model, "max_seq_len", None)
    for saved, own in shapes:
        for theirs, ours in zip(saved, own):
            if theirs != ours and ours == vocab:
                return (f"The pretrained run's vocabulary has {theirs} ids, this model's {ours}: use the pretrained "
                        f"run's tokenizer (leave the tokenizer section out of this config: it comes from "
                        f"train.init_from) and leave model.vocab_size null.")
            if theirs != ours and ours == positions:
                return (f"The pretrained model has {theirs} positions, this one {ours}: set model.max_seq_len to "
                        f"{theirs} and keep the data's sequence length at most {theirs}.")
    return ("The model options that decide shapes (layers, widths, heads, segment embeddings, ...) must be the "
            "pretrained run's: leave them out of this config, they come from train.init_from.")
