"""Checkpoints: safetensors weights plus trainer state (optimizer, scheduler, RNG, data position), written atomically.

Layout: ``RUN_DIR/checkpoints/step_000400/{model.safetensors, trainer_state.pt, manifest.json}`` and
``RUN_DIR/checkpoints/latest`` naming the newest complete checkpoint. A checkpoint is written into a temporary
folder, flushed to disk, and renamed into place; only then does ``latest`` move (itself replaced atomically). A crash
at any point leaves the previous checkpoint and ``latest`` untouched.
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
         keep: int, meta: dict | None = None) -> Path:
    """Write the checkpoint of ``step``, point ``latest`` at it, and keep only the ``keep`` newest. ``weights`` is
    the model, or its full state dict with tied parameters named once (gathered from the ranks of a sharded run).
    ``meta`` goes into the manifest (what rebuilding the model needs without the data, e.g. the block size)."""
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
    for old in sorted(p for p in root.glob("step_*") if p.is_dir())[:-keep]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest(run_dir: Path) -> Path:
    """The newest complete checkpoint of a run."""
    root = checkpoints_dir(run_dir)
    pointer = root / "latest"
    if not pointer.is_file():
        raise CheckpointError(f"{run_dir} has no checkpoint to resume from ({pointer} is missing). A run writes one "
                              f"every train.checkpoint_every steps and at its end.")
    path = root / pointer.read_text().strip()
    if not (path / MANIFEST).is_file():
        raise CheckpointError(f"checkpoint {path} named by {pointer} is incomplete (no {MANIFEST}).")
    return path


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
