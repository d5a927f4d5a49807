"""The run directory's own files, written so that a crash at any byte leaves them readable.

``metrics.jsonl`` is appended one flushed record at a time; a crash (or a full disk) can leave only its last line torn,
and readers skip that line and a resume cuts it off. Temporary files and folders of a killed process
(``.NAME.tmp-PID``, ``checkpoints/.tmp-step_N-PID``) are removed at the next start once their process is gone.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

from hookformer.core.checkpoint import TEMPORARY_NAME, checkpoints_dir, write_atomically
from hookformer.core.errors import ConfigError, HookformerError

METRICS = "metrics.jsonl"


def append_record(run_dir: Path, record: dict) -> None:
    """Append one record to the run's metrics log and flush it to disk (the checkpoint after it may be relied on
    to find it there)."""
    path = Path(run_dir) / METRICS
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise HookformerError(f"cannot append to {path}: {exc.strerror}. The run stops here; once the problem is "
                              f"fixed (e.g. disk space freed), continue it with --resume {run_dir} (a torn last "
                              f"line is repaired then).") from None


def read_records(path: Path) -> list[dict]:
    """The records of a metrics log. A last line cut short by a crash is left out; any other unreadable line is a
    HookformerError naming it."""
    lines = Path(path).read_text(encoding="utf-8", errors="replace").split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
        elif number < len(lines):  # a line followed by a newline was written whole: it was damaged later
            raise HookformerError(f"{path}, line {number}, is not a metrics record ({line[:60]!r}); remove or fix "
                                  f"that line.")
    return records


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Keep the records up to ``step`` (the checkpoint a run resumes from) and drop a torn last line, so that the
    history continues without duplicated or missing steps."""
    path = Path(run_dir) / METRICS
    if path.exists():
        kept = [record for record in read_records(path) if record["step"] <= step]
        write_atomically(path, "".join(json.dumps(record) + "\n" for record in kept))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Remove the temporary files and folders that processes no longer running left in the run (a kill during a
    checkpoint write leaves a full-size copy). Returns what was removed."""
    removed = []
    for folder in (Path(run_dir), checkpoints_dir(run_dir)):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            match = TEMPORARY_NAME.fullmatch(path.name)
            if match is None or _alive(int(match.group(1))):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def holds_files(path: Path) -> bool:
    """Whether ``path`` is a folder with something in it; a path that cannot be a folder holds nothing (make_run_dir
    then says what is wrong with it)."""
    try:
        return path.is_dir() and any(path.iterdir())
    except OSError:
        return False


def make_run_dir(run_dir: Path) -> Path | None:
    """Create the run directory (and missing parents) and check that files can be written in it. Returns the topmost
    folder created, which a failed start removes so that it leaves nothing behind, or None when the directory
    existed. A path that cannot hold a run is a ConfigError."""
    run_dir = Path(run_dir)
    created, problem = None, None
    try:
        created = next((p for p in reversed([run_dir, *run_dir.parents]) if not p.exists()), None)
        if run_dir.exists() and not run_dir.is_dir():
            problem = "it is a file, not a folder"
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            probe = run_dir / f".write-test.tmp-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
    except OSError as exc:
        problem = ("a part of the path is a file, not a folder" if exc.errno == errno.ENOTDIR
                   else exc.strerror or str(exc))
    if problem is not None:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise ConfigError(f"--run-dir {run_dir} cannot hold a run: {problem}. Choose a writable folder.")
    return created
