"""The benchmark scripts keep running against the engine's current interfaces (their figures are not checked:
speed is measured by running them, never asserted in tests)."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.slow
def test_the_throughput_benchmark_builds_and_trains_hookformer_beside_the_reference(tmp_path):
    done = subprocess.run([sys.executable, str(BENCHMARKS / "throughput.py"), "--quick", "--no-compile", "--no-hf",
                           "--dtype", "fp32"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    row = next(line for line in done.stdout.splitlines() if line.startswith("| A ") and "eager" in line)
    cells = [cell.strip() for cell in row.split("|")]
    assert cells[4].replace(",", "").isdigit() and cells[5].replace(",", "").isdigit()  # reference, hookformer tok/s
