"""Checkpoints: safetensors weights plus trainer state (optimizer, scheduler, RNG, data position), written atomically
and checksummed.

Layout: ``RUN_DIR/checkpoints/step_000400/{model.safetensors, trainer_state.pt, manifest.json}``,
``RUN_DIR/checkpoints/latest`` naming the newest complete checkpoint and, with early stopping,
``RUN_DIR/checkpoints/best`` naming the best evaluation's (kept whatever ``keep_checkpoints`` says). A checkpoint is
written into a temporary folder, flushed to disk, and renamed into place; only then do the pointers move (each
replaced atomically). A crash at any point leaves the previous checkpoint and the pointers untouched; the newest
``step_*`` folder is the newest complete checkpoint even when the crash came before ``latest`` moved.

The manifest holds the step, the config's hash and each file's size and sha256. Every loader verifies them first:
a damaged or mismatched checkpoint is a CheckpointError that names the file and the run's newest intact checkpoint,
to be chosen with ``--checkpoint step_N`` (nothing falls back silently).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_file, save_model

from hookformer.core.errors import CheckpointError

WEIGHTS = "model.safetensors"
STATE = "trainer_state.pt"
MANIFEST = "manifest.json"
STEP_NAME = re.compile(r"step_(\d+)")
#: Temporary files and folders of write_atomically and save: ``.NAME.tmp-PID`` and ``.tmp-step_N-PID``.
TEMPORARY_NAME = re.compile(r"\.(?:.+\.tmp|tmp-step_\d+)-(\d+)")
#: Test hook (tests/test_fault_injection.py): SIGKILL this process when ``save`` reaches the named point.
KILL_AT_VARIABLE = "HOOKFORMER_TEST_KILL_AT"


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see either the old or the new content, never a mix, and the
    new content survives a power loss once this returns."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent)


def _kill_point(name: str) -> None:
    """The fault-injection hook: a test names a point of ``save`` in HOOKFORMER_TEST_KILL_AT to die there."""
    if os.environ.get(KILL_AT_VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def step_of(path: Path) -> int | None:
    """The step of a checkpoint folder named ``step_N``, else None."""
    match = STEP_NAME.fullmatch(path.name)
    return int(match.group(1)) if match else None


def _checkpoints(root: Path) -> list[Path]:
    """The checkpoint folders renamed into place (each complete when written), oldest step first: by step number,
    not by name, which orders step_1000000 before step_999000."""
    return sorted((p for p in root.glob("step_*") if step_of(p) is not None and p.is_dir()), key=step_of)


def _digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def config_hash(config: dict) -> str:
    """sha256 of a resolved config (``RunConfig.dump()``), recorded in each manifest."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


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
    try:
        tmp.mkdir()
        if isinstance(weights, torch.nn.Module):
            save_model(weights, str(tmp / WEIGHTS))  # handles tied weights (stored once)
        else:
            save_file({name: tensor.contiguous() for name, tensor in weights.items()}, str(tmp / WEIGHTS))
        _kill_point("weights")
        _save_state(state, tmp / STATE)
        _kill_point("state")
        files = {name: {"size": (tmp / name).stat().st_size, "sha256": _digest(tmp / name)}
                 for name in (WEIGHTS, STATE)}
        (tmp / MANIFEST).write_text(json.dumps({"step": step, "files": files, **(meta or {})}, indent=2))
        for name in (WEIGHTS, STATE, MANIFEST):
            _fsync(tmp / name)
        _kill_point("manifest")
        if final.exists():  # the same step saved again (e.g. a resumed run ends where it started)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync(root)
        _kill_point("renamed")
        write_atomically(root / "latest", final.name)
        if best:
            write_atomically(root / "best", final.name)
    except (OSError, SafetensorError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        previous = [p.name for p in _checkpoints(root) if p != final]
        raise CheckpointError(f"cannot write the checkpoint of step {step} into {root}: {_reason(exc)} "
                              f"({shutil.disk_usage(root).free:,} bytes free there). The previous checkpoint, "
                              f"{previous[-1] if previous else 'none'}, is untouched: free space, then continue the "
                              f"run with --resume {run_dir}.") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _kill_point("pointed")
    kept = {final, _pointed(root / "best")}
    for old in _checkpoints(root)[:-keep]:
        if old not in kept:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _save_state(state: dict, path: Path) -> None:
    """torch.save, whose failed write (a full disk) raises that write's OSError: torch itself turns it into a
    RuntimeError that does not name the cause."""
    with open(path, "wb", buffering=0) as raw:
        file = _Writer(raw)
        try:
            torch.save(state, file)
        except RuntimeError:
            if file.error is None:
                raise
            raise file.error from None


class _Writer:
    """A write-only file for torch.save that remembers the OSError of a failed write."""

    def __init__(self, raw):
        self.raw, self.error = raw, None

    def write(self, data) -> int:
        view, done = memoryview(data).cast("B"), 0
        try:
            while done < len(view):  # an unbuffered write may write less than asked
                done += self.raw.write(view[done:])
        except OSError as exc:
            self.error = exc
            raise
        return done

    def flush(self) -> None:
        pass


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]


def _pointed(pointer: Path) -> Path | None:
    """The checkpoint a pointer file (``latest``, ``best``) names, or None without the file. A pointer names a
    ``step_N`` folder of its own checkpoints folder and nothing else (never another run's checkpoint)."""
    if not pointer.is_file():
        return None
    name = pointer.read_text(encoding="utf-8", errors="replace").strip()
    if STEP_NAME.fullmatch(name) is None:
        raise CheckpointError(f"{pointer} names {name!r}, which is not a checkpoint of this run (a pointer holds a "
                              f"step_N folder name of {pointer.parent}). Pass --checkpoint step_N to choose one.")
    return pointer.parent / name


def latest(run_dir: Path) -> Path:
    """The newest complete checkpoint of a run (not verified yet: the loaders verify what they read)."""
    root = checkpoints_dir(run_dir)
    _pointed(root / "latest")  # a pointer out of the run is refused even where newer folders decide
    path = newest(run_dir)
    if path is None:
        raise CheckpointError(f"{run_dir} has no checkpoint to resume from (no {root}/step_N folder). A run writes "
                              f"one every train.checkpoint_every steps and at its end.")
    return path


def newest(run_dir: Path) -> Path | None:
    """The run's checkpoint folder of the highest step, or None before its first checkpoint."""
    found = _checkpoints(checkpoints_dir(run_dir))
    return found[-1] if found else None


def best(run_dir: Path) -> Path | None:
    """The best evaluation's checkpoint of a run with early stopping, or None before its first evaluation."""
    return _pointed(checkpoints_dir(run_dir) / "best")


def find(run_dir: Path, name: str | None) -> Path:
    """The checkpoint ``--checkpoint NAME`` chooses: None or ``latest`` (the newest), ``best``, ``step_N`` (a folder
    of the run's checkpoints), or a checkpoint folder's path."""
    if name in (None, "latest"):
        return latest(run_dir)
    if name == "best":
        path = best(run_dir)
        if path is None:
            raise CheckpointError(f"{run_dir} has no best checkpoint (only runs with train.early_stopping keep one); "
                                  f"use --checkpoint latest.")
        return path
    path = checkpoints_dir(run_dir) / name if STEP_NAME.fullmatch(name) else Path(name)
    if not (path / MANIFEST).is_file():
        choices = ", ".join(p.name for p in _checkpoints(checkpoints_dir(run_dir))) or "none"
        raise CheckpointError(f"--checkpoint {name}: {path} is not a checkpoint (it has no {MANIFEST}); the "
                              f"checkpoints of {run_dir}: {choices}.")
    return path


def manifest(path: Path) -> dict:
    """The manifest of a checkpoint; CheckpointError when it is missing or unreadable."""
    try:
        data = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"the checkpoint {path} is damaged: {path / MANIFEST} cannot be read "
                              f"({_reason(exc)}).") from None
    if not isinstance(data, dict) or not isinstance(data.get("step"), int):
        raise CheckpointError(f"the checkpoint {path} is damaged: {path / MANIFEST} holds no step.")
    return data


def verify(path: Path) -> dict:
    """Check every file of a checkpoint against the size and sha256 its manifest records; returns the manifest. A
    mismatch is a CheckpointError naming the file and, for a checkpoint of a run, the newest intact one to use."""
    try:
        return _verified(path)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc} {_fallback_hint(path)}") from None


def _verified(path: Path) -> dict:
    data = manifest(path)
    files = data.get("files")
    # Checkpoints written before checksums list their files only; those are checked for presence.
    recorded = files if isinstance(files, dict) else {name: None for name in (files or [WEIGHTS, STATE])}
    for name, expected in recorded.items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"the checkpoint {path} is damaged: {file} is missing.")
        if expected is None:
            continue
        if not isinstance(expected, dict) or file.stat().st_size != expected.get("size") \
                or _digest(file) != expected.get("sha256"):
            raise CheckpointError(f"the checkpoint {path} is damaged: {file} does not match the size and sha256 "
                                  f"recorded in its {MANIFEST} (changed or corrupted since it was written).")
    return data


def _fallback_hint(path: Path) -> str:
    """Which checkpoint of the same run to use instead of the damaged ``path``."""
    root = path.parent
    if root.name != "checkpoints":
        return ""
    for other in reversed(_checkpoints(root)):
        if other.name != path.name and _intact(other):
            return (f"The newest intact checkpoint of this run is {other.name}: continue from it with "
                    f"`hookformer train --resume {root.parent} --checkpoint {other.name}` (evaluate and generate "
                    f"take --checkpoint {other.name} too).")
    return "The run has no other intact checkpoint."


def _intact(path: Path) -> bool:
    try:
        _verified(path)
    except CheckpointError:
        return False
    return True


def load_weights(path: Path, model: torch.nn.Module) -> None:
    """Load a verified checkpoint's weights into ``model`` strictly: names and shapes must match."""
    verify(path)
    _read_weights(path, model)


def _read_weights(path: Path, model: torch.nn.Module) -> None:
    try:
        missing, unexpected = load_model(model, str(path / WEIGHTS), strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"the weights in {path / WEIGHTS} do not fit the model built from the config: "
                              f"{str(exc).splitlines()[0]}") from None
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"the checkpoint {path} is damaged: {path / WEIGHTS} cannot be read "
                              f"({_reason(exc)}).") from None
    if missing or unexpected:
        raise CheckpointError(f"the weights in {path / WEIGHTS} do not match the model built from the config "
                              f"(missing: {sorted(missing)[:5]}, unexpected: {sorted(unexpected)[:5]}).")


def load(path: Path, model: torch.nn.Module) -> dict:
    """Verify a checkpoint, load its weights into ``model`` (see load_weights) and return its trainer state, whose
    step must be the manifest's."""
    step = verify(path)["step"]
    _read_weights(path, model)
    try:
        # weights_only: a checkpoint is data; a pickled object that would run code is refused.
        state = torch.load(path / STATE, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for a file it cannot read
        raise CheckpointError(f"the checkpoint {path} is damaged: {path / STATE} cannot be read as a trainer state "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}). "
                              f"{_fallback_hint(path)}") from None
    if not isinstance(state, dict) or state.get("step") != step:
        raise CheckpointError(f"the checkpoint {path} is inconsistent: {path / STATE} is the trainer state of step "
                              f"{state.get('step') if isinstance(state, dict) else None}, its {MANIFEST} says step "
                              f"{step}. {_fallback_hint(path)}")
    return state


def load_pretrained(path: Path, model: torch.nn.Module, added: frozenset[str] = frozenset()
                    ) -> tuple[list[str], list[str]]:
    """Load a pretrained checkpoint into ``model`` to fine-tune it. Every tensor of the backbone (everything but the
    task heads, ``heads.<name>.*``) must be in the checkpoint with the model's shape, and the checkpoint must hold no
    backbone tensor the model lacks; else a CheckpointError names each tensor with both shapes and the config fields
    that decide them. A task head the checkpoint lacks, or holds with other shapes, keeps its fresh weights; a head
    only in the checkpoint is not used. The tensors named in ``added`` (what hook parts added to the model, see
    ``hookformer_added_tensors``) keep their values where the checkpoint lacks them. Returns (heads kept fresh, heads
    of the checkpoint not used)."""
    from safetensors import safe_open

    verify(path)
    try:
        with safe_open(str(path / WEIGHTS), framework="pt") as handle:
            saved = {name: handle.get_tensor(name) for name in handle.keys()}
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"the checkpoint {path} is damaged: {path / WEIGHTS} cannot be read "
                              f"({_reason(exc)}).") from None
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
        elif found is None and all(name in added for name in names):
            continue
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
    """What to change for mismatched (checkpoint, model) shapes, said in terms of the protocol (Model.vocab_size and
    max_seq_len come from the tokenizer and the checkpoint's manifest), not of any part's options."""
    vocab, positions = getattr(model, "vocab_size", None), getattr(model, "max_seq_len", None)
    for saved, own in shapes:
        for theirs, ours in zip(saved, own):
            if theirs != ours and ours == vocab:
                return (f"The pretrained run's vocabulary has {theirs} ids, this model's {ours}: use the pretrained "
                        f"run's tokenizer (leave the tokenizer section out of this config: it comes from "
                        f"train.init_from) and leave the model's vocabulary size to it.")
            if theirs != ours and ours == positions:
                return (f"The pretrained model has {theirs} positions, this one {ours}: leave the model's sequence "
                        f"length to the pretrained checkpoint and keep the data's sequences at most {theirs} long.")
    return ("The model options that decide shapes (layers, widths, heads, segment embeddings, ...) must be the "
            "pretrained run's: leave them out of this config, they come from train.init_from.")
