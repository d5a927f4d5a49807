"""What survives a crash: SIGKILLs at chosen points of a checkpoint write (core/checkpoint.py's test hook,
HOOKFORMER_TEST_KILL_AT, in real subprocesses), a full disk (a lowered RLIMIT_FSIZE makes real writes fail the way
ENOSPC does), damaged checkpoint files and run files, signals, and bad inputs. Each test names the failure of issue 16
it pins down."""

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from hookformer.core import checkpoint, interrupt, runfiles
from hookformer.core.cli import main
from hookformer.core.config import compose, validate
from hookformer.core.errors import CheckpointError, HookformerError
from hookformer.core.hookspecs import hookimpl
from hookformer.core.loop import Run
from hookformer.registry.catalog import Catalog
from safetensors.torch import load_file
from test_train import records, tiny_config

#: Checkpoints at steps 2 and 4 (all kept), no samples: a run of about a second.
SETTINGS = {"max_steps": 4, "checkpoint_every": 2, "eval_every": 2, "keep_checkpoints": 3, "sample_tokens": 0}


def cli(capsys, *args) -> tuple[int, str]:
    """Run the command line in this process: (exit code, stderr), which never holds a traceback."""
    code = main([str(arg) for arg in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


@pytest.fixture(scope="module")
def finished(tmp_path_factory, docs_corpus) -> Path:
    """A finished run of SETTINGS (steps 1-4, checkpoints step_000002 and step_000004), trained once per module."""
    base = tmp_path_factory.mktemp("finished")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOOKFORMER_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        assert main(["train", str(tiny_config(base, docs_corpus, **SETTINGS)), "--run-dir", str(base / "run")]) == 0
    return base / "run"


@pytest.fixture
def run(finished, tmp_path) -> Path:
    """A copy of the finished run to damage."""
    shutil.copytree(finished, tmp_path / "run")
    return tmp_path / "run"


def step_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step:06d}"


def reseal(path: Path) -> None:
    """Record a checkpoint's current files in its manifest, as a tool that rewrites a checkpoint (or an attacker)
    would: the checksums then pass and the loaders' own checks must catch the problem."""
    manifest = checkpoint.manifest(path)
    manifest["files"] = {name: {"size": (path / name).stat().st_size, "sha256": checkpoint._digest(path / name)}
                         for name in manifest["files"]}
    (path / checkpoint.MANIFEST).write_text(json.dumps(manifest))


# -- 1. a torn metrics.jsonl record ----------------------------------------------------------------------------------
def test_a_torn_last_metrics_record_is_repaired_on_resume(run, capsys):
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 61, "loss": 3.2183033776661705, ')  # the disk filled in the middle of a record
    code, err = cli(capsys, "train", "--resume", run, "--set", "train.max_steps=6")
    assert code == 0, err
    steps = [r["step"] for r in records(run) if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_metrics_readers_skip_a_torn_last_line_and_name_a_damaged_earlier_one(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    assert runfiles.read_records(path) == [{"step": 1, "loss": 2.0}]
    path.write_text('{"step": 1, "loss": 2.0}\ngarbage\n{"step": 2}\n')
    with pytest.raises(HookformerError, match="line 2"):
        runfiles.read_records(path)


# -- 2 and 4. checksums; damaged checkpoints are clear errors that name the file and the intact one to use -----------
def flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


DAMAGE = {
    "flipped bit in the weights": lambda c: flip_a_bit(c / "model.safetensors"),
    "truncated weights": lambda c: (c / "model.safetensors").write_bytes((c / "model.safetensors").read_bytes()[:99]),
    "empty weights": lambda c: (c / "model.safetensors").write_bytes(b""),
    "deleted weights": lambda c: (c / "model.safetensors").unlink(),
    "random trainer state": lambda c: (c / "trainer_state.pt").write_bytes(os.urandom(2000)),
    "truncated trainer state": lambda c: (c / "trainer_state.pt").write_bytes(
        (c / "trainer_state.pt").read_bytes()[:50]),
    "trainer state of another step": lambda c: shutil.copy(c.parent / "step_000002" / "trainer_state.pt", c),
    "weights of another step": lambda c: shutil.copy(c.parent / "step_000002" / "model.safetensors", c),
    "manifest not JSON": lambda c: (c / "manifest.json").write_text("{not json"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_checkpoint_is_a_clear_error_naming_the_file_and_the_intact_checkpoint(run, capsys, damage):
    newest = step_dir(run, 4)
    DAMAGE[damage](newest)
    for command in (["train", "--resume", run], ["evaluate", run], ["generate", run, "--tokens", "2"]):
        code, err = cli(capsys, *command)
        assert code == 2, (command, err)
        assert str(newest) in err and "--checkpoint step_000002" in err, err
    code, err = cli(capsys, "train", "--resume", run, "--checkpoint", "step_000002")
    assert code == 0, err
    assert checkpoint.verify(step_dir(run, 4))["step"] == 4  # written again, whole


def test_trainer_state_and_manifest_of_different_steps_are_refused_even_when_resealed(run, capsys):
    newest = step_dir(run, 4)
    shutil.copy(step_dir(run, 2) / "trainer_state.pt", newest)
    reseal(newest)
    code, err = cli(capsys, "train", "--resume", run)
    assert code == 2 and "trainer state of step 2" in err and "says step 4" in err


def test_a_trainer_state_with_missing_entries_is_a_clear_error(run, capsys):
    newest = step_dir(run, 4)
    state = torch.load(newest / "trainer_state.pt", weights_only=True)
    del state["optimizer"]
    torch.save(state, newest / "trainer_state.pt")
    reseal(newest)
    code, err = cli(capsys, "train", "--resume", run)
    assert code == 2 and "'optimizer'" in err and str(newest) in err


class Payload:
    def __reduce__(self):
        return (os.system, ("touch PAYLOAD_RAN",))


def test_a_pickle_payload_is_refused_without_running_and_without_suggesting_weights_only_false(run, capsys,
                                                                                               monkeypatch):
    monkeypatch.chdir(run)
    newest = step_dir(run, 4)
    state = torch.load(newest / "trainer_state.pt", weights_only=True)
    torch.save({**state, "payload": Payload()}, newest / "trainer_state.pt")
    reseal(newest)
    code, err = cli(capsys, "train", "--resume", run)
    assert code == 2 and "trainer_state.pt cannot be read" in err and "--checkpoint step_000002" in err
    assert "weights_only=False" not in err and not (run / "PAYLOAD_RAN").exists()


def test_fine_tuning_from_a_damaged_checkpoint_is_refused(run):
    flip_a_bit(step_dir(run, 4) / "model.safetensors")
    with pytest.raises(CheckpointError, match="model.safetensors does not match the size and sha256"):
        checkpoint.load_pretrained(step_dir(run, 4), torch.nn.Linear(1, 1))


def test_each_manifest_records_step_config_hash_and_every_file_size_and_sha256(finished):
    manifest = checkpoint.manifest(step_dir(finished, 4))
    assert manifest["step"] == 4 and len(manifest["config_sha256"]) == 64
    for name in ("model.safetensors", "trainer_state.pt"):
        assert manifest["files"][name]["size"] == (step_dir(finished, 4) / name).stat().st_size
        assert manifest["files"][name]["sha256"] == checkpoint._digest(step_dir(finished, 4) / name)
    saved = yaml.safe_load((finished / "config.yaml").read_text())
    assert manifest["config_sha256"] == checkpoint.config_hash(saved)


# -- 3. latest confined to the run ----------------------------------------------------------------------------------
def test_a_latest_pointer_out_of_the_run_is_refused(run, finished, capsys):
    (run / "checkpoints" / "latest").write_text(f"../../{finished.parent.name}/run/checkpoints/step_000002")
    code, err = cli(capsys, "train", "--resume", run)
    assert code == 2 and "not a checkpoint of this run" in err


# -- 5. a full disk ---------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def file_size_limit(size: int):
    """Writes past ``size`` bytes fail (EFBIG), as on a full disk: real failing writes, in this process only."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


@pytest.mark.parametrize("big", ["weights", "trainer state"])
def test_a_full_disk_during_a_checkpoint_write_is_a_clear_error_and_keeps_the_previous_one(tmp_path, big):
    small, large = torch.nn.Linear(2, 2), torch.nn.Linear(200, 200)
    good = checkpoint.save(tmp_path, 1, small, {"step": 1}, keep=2)
    weights, state = (large, {"step": 2}) if big == "weights" else (small, {"step": 2, "m": large.weight.detach()})
    with file_size_limit(20_000), pytest.raises(CheckpointError, match="File too large.*step_000001, is untouched"):
        checkpoint.save(tmp_path, 2, weights, state, keep=2)
    assert checkpoint.latest(tmp_path) == good and checkpoint.verify(good)["step"] == 1
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["latest", "step_000001"]  # no temporary left


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk(size, options="")``: a tmpfs of ``size`` mounted on a new folder (skipped where mounting is not
    permitted); ``remount(size)`` of the same fixture frees space."""
    mounted = []

    def mount(size: str, options: str = "") -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}{options}", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_disk_that_fills_during_a_run_stops_it_cleanly_and_it_resumes_once_space_is_freed(
        small_disk, tmp_path, docs_corpus, finished, capsys):
    disk = small_disk("400k")  # room for the checkpoint of step 2, not for a second one beside it
    run_dir = disk / "run"
    code, err = cli(capsys, "train", tiny_config(tmp_path, docs_corpus, **{**SETTINGS, "keep_checkpoints": 1}),
                    "--run-dir", run_dir)
    assert code == 2 and "No space left on device" in err, err
    assert checkpoint.newest(run_dir).name == "step_000002" and checkpoint.verify(step_dir(run_dir, 2))
    subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
    code, err = cli(capsys, "train", "--resume", run_dir)
    assert code == 0, err
    assert_same_final_state(run_dir, finished)


def test_a_read_only_run_directory_is_refused(small_disk, tmp_path, docs_corpus, capsys):
    disk = small_disk("1m", ",ro")
    code, err = cli(capsys, "train", tiny_config(tmp_path, docs_corpus, **SETTINGS), "--run-dir", disk / "run")
    assert code == 2 and "Read-only file system" in err


def test_a_full_disk_while_appending_metrics_is_a_clear_error(tmp_path):
    (tmp_path / "metrics.jsonl").write_bytes(b"x" * 100)
    with file_size_limit(100), pytest.raises(HookformerError, match="cannot append.*--resume"):
        runfiles.append_record(tmp_path, {"step": 1, "loss": 2.0})


# -- 6 and 7. kills inside checkpoint writes: stale temporaries removed, every state resumable, bit-identical -------
def kill_during_first_checkpoint(tmp_path, docs_corpus, point: str) -> Path:
    run_dir = tmp_path / "killed"
    env = {**os.environ, checkpoint.KILL_AT_VARIABLE: point}
    done = subprocess.run([sys.executable, "-m", "hookformer", "train", str(tiny_config(tmp_path, docs_corpus, **SETTINGS)),
                           "--run-dir", str(run_dir)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    return run_dir


def assert_same_final_state(run_dir: Path, finished: Path) -> None:
    ours, theirs = step_dir(run_dir, 4), step_dir(finished, 4)
    for name, tensor in load_file(theirs / "model.safetensors").items():
        assert torch.equal(load_file(ours / "model.safetensors")[name], tensor), name
    a, b = (torch.load(p / "trainer_state.pt", weights_only=True) for p in (ours, theirs))
    assert torch.equal(a["torch_rng"], b["torch_rng"]) and a["data_position"] == b["data_position"]
    for x, y in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(x[key], y[key]) for key in x)
    assert [(r["step"], r["loss"]) for r in records(run_dir) if "loss" in r] == \
        [(r["step"], r["loss"]) for r in records(finished) if "loss" in r]


@pytest.mark.parametrize("point", [
    "state",  # inside the temporary folder: no checkpoint yet, a full-size temporary folder left
    "renamed",  # step_000002 complete, `latest` not written yet
    pytest.param("weights", marks=pytest.mark.slow),
    pytest.param("manifest", marks=pytest.mark.slow),
    pytest.param("pointed", marks=pytest.mark.slow),
])
def test_a_run_killed_inside_its_first_checkpoint_write_resumes_to_the_same_bits(tmp_path, docs_corpus, finished,  # noqa
                                                                                  capsys, point):
    run_dir = kill_during_first_checkpoint(tmp_path, docs_corpus, point)
    left = list((run_dir / "checkpoints").glob(".tmp-*"))
    code, err = cli(capsys, "train", "--resume", run_dir)
    assert code == 0, err
    assert not any(path.exists() for path in left)
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))
    if checkpoint.newest(run_dir) is None:
        assert "starting it over from step 0" in err
    assert_same_final_state(run_dir, finished)


def test_stale_temporaries_of_live_processes_are_kept(tmp_path):
    mine = checkpoint.checkpoints_dir(tmp_path) / f".tmp-step_000002-{os.getpid()}"
    mine.mkdir(parents=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = tmp_path / f".config.yaml.tmp-{gone.pid}"
    dead.write_text("half")
    assert runfiles.remove_stale_temporaries(tmp_path) == [dead]
    assert mine.exists()


# -- 8. retention by step number ------------------------------------------------------------------------------------
def test_retention_keeps_the_highest_steps_past_step_999999(tmp_path):
    model = torch.nn.Linear(1, 1)
    for step in (999_000, 999_500, 1_000_000, 1_000_500, 1_001_000):
        checkpoint.save(tmp_path, step, model, {"step": step}, keep=3)
    kept = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
    assert kept == ["step_1000000", "step_1000500", "step_1001000"]
    assert checkpoint.latest(tmp_path).name == "step_1001000"


# -- 9 and 10. bad inputs: exit 2, no traceback, nothing left behind ------------------------------------------------
@pytest.mark.parametrize("case", ["betas", "seed -1", "seed 2**70", "lr inf", "non-UTF-8", "file", "under a file",
                                  "under /proc", "name too long"])
def test_bad_inputs_exit_2_without_traceback_or_leftover_folder(tmp_path, docs_corpus, capsys, case):
    config = tiny_config(tmp_path, docs_corpus, **SETTINGS)
    run_dir = tmp_path / "new" / "run"
    (tmp_path / "a_file").write_text("")
    overrides = {"betas": ["optimizer.betas=[1.5,0.9]"], "seed -1": ["train.seed=-1"],
                 "seed 2**70": [f"train.seed={2**70}"], "lr inf": ["optimizer.lr=.inf"]}.get(case, [])
    if case == "non-UTF-8":
        config.write_bytes(config.read_bytes() + b"\n# caf\xe9\n")
    run_dir = {"file": tmp_path / "a_file", "under a file": tmp_path / "a_file" / "run",
               "under /proc": Path("/proc/hookformer-run"), "name too long": tmp_path / "new" / ("r" * 256)}.get(
        case, run_dir)
    args = ["train", config, "--run-dir", run_dir] + [arg for o in overrides for arg in ("--set", o)]
    code, err = cli(capsys, *args)
    assert code == 2 and err.startswith("hookformer: error"), err
    assert not (tmp_path / "new").exists()


def test_the_data_command_refuses_a_run_dir_that_is_a_file(tmp_path, docs_corpus, capsys):
    (tmp_path / "a_file").write_text("")
    code, err = cli(capsys, "data", tiny_config(tmp_path, docs_corpus), "--run-dir", tmp_path / "a_file" / "run")
    assert code == 2 and "a part of the path is a file" in err


def test_nproc_0_is_refused(tmp_path, docs_corpus, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", str(tiny_config(tmp_path, docs_corpus)), "--nproc", "0"])
    assert exit.value.code == 2 and "expected 1 or more" in capsys.readouterr().err


def test_resuming_with_max_steps_below_the_checkpoint_is_refused_and_keeps_the_config(run, capsys):
    before = (run / "config.yaml").read_bytes()
    code, err = cli(capsys, "train", "--resume", run, "--set", "train.max_steps=1")
    assert code == 2 and "train.max_steps is 1" in err and "at step 4" in err
    assert (run / "config.yaml").read_bytes() == before


def test_the_non_finite_loss_message_does_not_suggest_a_clip_already_set(tmp_path, docs_corpus, capsys):
    code, err = cli(capsys, "train", tiny_config(tmp_path, docs_corpus, **SETTINGS), "--run-dir", tmp_path / "r",
                    "--set", "optimizer.lr=1e30", "--set", "train.clip_grad_norm=1e30", "--set", "train.max_steps=20")
    assert code == 2 and "the training loss became" in err
    assert "or train.clip_grad_norm" in err and "set train.clip_grad_norm" not in err


# -- 10. SIGTERM and SIGINT -------------------------------------------------------------------------------------------
class SignalAt:
    """Sends this process a signal at the end of a step, as `kill` or Ctrl-C would."""

    def __init__(self, step: int, signum: int):
        self.step, self.signum = step, signum

    @hookimpl
    def hookformer_step_end(self, record):
        if record["step"] == self.step:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum,save", [(signal.SIGTERM, True), (signal.SIGINT, False)])
def test_a_signal_stops_at_the_step_boundary_and_the_run_resumes_exactly(tmp_path, docs_corpus, finished,
                                                                         capsys, signum, save):
    config = validate(compose(tiny_config(tmp_path, docs_corpus, **SETTINGS, checkpoint_on_interrupt=save), []),
                      Catalog.load())
    run = Run(config, tmp_path / "run")
    run.assembly.register(SignalAt(3, signum))
    with interrupt.graceful_stop(), pytest.raises(interrupt.Interrupted) as stopped:
        run.train()
    assert stopped.value.exit_code == 128 + signum and "stopped at step 3" in str(stopped.value)
    assert (step_dir(tmp_path / "run", 3).exists()) == save
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored
    code, err = cli(capsys, "train", "--resume", tmp_path / "run")
    assert code == 0, err
    assert_same_final_state(tmp_path / "run", finished)


def test_a_second_signal_stops_at_once_even_inside_a_long_operation():
    waits = ("import os, signal, time\nfrom hookformer.core import interrupt\nwith interrupt.graceful_stop():\n"
             "    os.kill(os.getpid(), signal.SIGINT)\n    print(interrupt.requested(), flush=True)\n"
             "    time.sleep(60)\n")  # stands for a long step
    process = subprocess.Popen([sys.executable, "-c", waits], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline().strip() == str(int(signal.SIGINT))  # the first signal only asked for a stop
    began = time.time()
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGTERM and time.time() - began < 10
    assert "SIGINT received: stopping after the current step" in err


def test_sigterm_to_the_command_line_saves_a_checkpoint_and_exits_143(tmp_path, docs_corpus):
    run_dir = tmp_path / "run"
    config = tiny_config(tmp_path, docs_corpus, **{**SETTINGS, "max_steps": 100_000, "checkpoint_every": 100_000})
    process = subprocess.Popen([sys.executable, "-m", "hookformer", "train", str(config), "--run-dir", str(run_dir)],
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run_dir / "metrics.jsonl").exists() or len(records(run_dir)) < 3:
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    err = process.communicate(timeout=60)[1]
    assert process.returncode == 143, err
    assert "SIGTERM received: the run stopped at step" in err and "Traceback" not in err
    newest = checkpoint.newest(run_dir)
    assert newest is not None and checkpoint.verify(newest)["step"] == records(run_dir)[-1]["step"]
