"""Data-parallel training on two CPU processes (gloo) started by torchrun: DDP and FSDP2 follow the single-process
loss curve of the same global batch, a two-rank run resumes exactly (also on one process), and a dead rank or a
config that differs between ranks ends the job with a message instead of a hang."""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from pydoc_data.topics import topics

import pytest
import yaml

#: Every test here starts torchrun processes (seconds each): run with -m slow (CI does).
pytestmark = pytest.mark.slow

STEPS = 10

# Starts hookformer's command line like `-m hookformer` does; HOOKFORMER_TEST_FAULT=RANK:WHAT:STEP makes that
# rank crash (raise), die (exit without a word) or disagree (another seed) to test the failure paths.
LAUNCHER = '''
import os, sys
from hookformer.core import loop
from hookformer.core.cli import main

rank, what, step = (os.environ.get("HOOKFORMER_TEST_FAULT") or "-1:none:0").split(":")
if int(os.environ.get("RANK", "0")) == int(rank):
    if what == "disagree":
        sys.argv += ["--set", "train.seed=7"]
    else:
        train_step = loop.Run.train_step

        def faulty_step(run):
            if run.step == int(step):
                if what == "die":
                    os._exit(3)
                raise RuntimeError("simulated crash")
            return train_step(run)

        loop.Run.train_step = faulty_step
sys.exit(main(sys.argv[1:]))
'''


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("distributed")
    (root / "corpus.txt").write_text("\n\n".join(topics[name] for name in sorted(topics)[:40]), encoding="utf-8")
    (root / "launch.py").write_text(LAUNCHER, encoding="utf-8")
    (root / "config.yaml").write_text(yaml.safe_dump({
        "data": {"name": "text", "paths": [str(root / "corpus.txt")], "block_size": 32},
        "tokenizer": {"name": "byte"},
        "model": {"name": "transformer", "n_layer": 2, "n_head": 2, "d_model": 32, "dropout": 0.0},
        # AdamW, not the default Muon: its bfloat16 Newton-Schulz turns the ranks' other summation order into
        # differences of about 2e-5 in the loss, above the tolerance these curves are held to.
        "optimizer": {"name": "adamw", "lr": 2.0e-3},
        "scheduler": {"name": "cosine", "warmup_steps": 2},
        "train": {"max_steps": STEPS, "batch_size": 4, "grad_accum_steps": 2, "eval_every": 5, "eval_batches": 2,
                  "log_every": 1, "checkpoint_every": 5, "sample_tokens": 8, "progress": False, "device": "cpu",
                  "distributed": {"timeout_s": 30}},
    }))
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hookformer(workdir: Path, *args: str, nproc: int = 1, fault: str = "", timeout: float = 120,
               via_nproc_flag: bool = False):
    """``hookformer ARGS`` in one process, or with ``nproc`` processes under torchrun (started directly, or by
    ``hookformer --nproc``); returns the finished process."""
    launcher = str(workdir / "launch.py")
    if via_nproc_flag:
        command = [sys.executable, "-m", "hookformer", *args, "--nproc", str(nproc)]
    elif nproc > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
                   "127.0.0.1", "--master_port", str(free_port()), launcher, *args]
    else:
        command = [sys.executable, launcher, *args]
    env = {**os.environ, "HOOKFORMER_CACHE": str(workdir / "cache"), "HOOKFORMER_TEST_FAULT": fault}
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=timeout)


def train(workdir: Path, run: str, strategy: str, nproc: int, *overrides: str, **kwargs):
    args = ["train", str(workdir / "config.yaml"), "--run-dir", str(workdir / run),
            "--set", f"train.distributed.strategy={strategy}", "--set", f"train.batch_size={8 // nproc}"]
    for override in overrides:
        args += ["--set", override]
    return hookformer(workdir, *args, nproc=nproc, **kwargs)


def losses(run_dir: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if "loss" in r]


def assert_same_curve(actual, expected):
    assert [step for step, _ in actual] == [step for step, _ in expected] == list(range(1, STEPS + 1))
    assert [loss for _, loss in actual] == pytest.approx([loss for _, loss in expected], rel=1e-5)


@pytest.fixture(scope="module")
def single(workdir) -> Path:
    done = train(workdir, "single", "none", 1)
    assert done.returncode == 0, done.stderr
    return workdir / "single"


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_follow_the_single_process_loss_curve(workdir, single, strategy):
    # DDP through `hookformer train --nproc 2`, which starts torchrun itself
    done = train(workdir, strategy, strategy, 2, via_nproc_flag=strategy == "ddp")
    assert done.returncode == 0, done.stderr
    run_dir = workdir / strategy
    assert_same_curve(losses(run_dir), losses(single))  # also: rank 0 alone wrote metrics.jsonl (no duplicates)
    assert done.stdout.count("run finished") == 1 and done.stderr.count("preparing data") == 1
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == f"step_{STEPS:06d}"
    assert (run_dir / "samples.txt").read_text() == (single / "samples.txt").read_text()


def test_a_two_rank_run_resumes_with_the_same_losses_on_two_ranks_or_one(workdir, single):
    crashed = train(workdir, "crashed", "fsdp", 2, fault="0:crash:7")
    assert crashed.returncode != 0
    assert "simulated crash" in crashed.stderr.split("Root Cause (first observed failure):")[1]
    assert (workdir / "crashed" / "checkpoints" / "latest").read_text().strip() == "step_000005"
    for nproc in (2, 1):  # the checkpoint holds full state and the data position: any number of ranks goes on
        run_dir = workdir / f"resumed-on-{nproc}"
        subprocess.run(["cp", "-r", str(workdir / "crashed"), str(run_dir)], check=True)
        done = hookformer(workdir, "train", "--resume", str(run_dir), "--set", f"train.batch_size={8 // nproc}",
                          nproc=nproc)
        assert done.returncode == 0, done.stderr
        assert_same_curve(losses(run_dir), losses(single))


def test_a_dead_rank_ends_the_job_with_a_message_naming_it(workdir):
    done = train(workdir, "dead", "ddp", 2, fault="1:die:3", timeout=90)
    assert done.returncode != 0
    # torchrun's failure summary lists the dead rank with its exit code. It is not always the "root cause": rank 0
    # may report its broken connection first.
    assert re.search(r"rank\s+: 1 \(local_rank: 1\)\n\s+exitcode\s+: 3\b", done.stderr), done.stderr[-3000:]


def test_a_config_that_differs_between_ranks_is_refused_at_start(workdir):
    done = train(workdir, "disagree", "ddp", 2, fault="1:disagree:0", timeout=90)
    assert done.returncode != 0
    assert "hookformer: error on rank 0 of 2: the resolved config differs between ranks: ranks [1] disagree with " \
        "rank 0" in done.stderr
    assert not (workdir / "disagree" / "metrics.jsonl").exists()
