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


@pytest.mark.slow
def test_the_time_to_quality_benchmark_trains_hookformer_nanogpt_like_the_reference_and_reports_every_contender(
        tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    from time_to_quality import DATA

    if not DATA.is_file():
        pytest.skip(f"tinyshakespeare is not at {DATA}")
    done = subprocess.run([sys.executable, str(BENCHMARKS / "time_to_quality.py"), "--quick", "--threads", "1"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {cells[1]: cells for cells in (line.split("|") for line in done.stdout.splitlines())
            if len(cells) > 8 and cells[2].strip().replace(",", "").isdigit()}
    names = [name.strip() for name in rows]
    assert names == ["reference (nanoGPT recipe)", "hookformer nanogpt", "hookformer speedrun",
                     "speedrun, muon -> adamw"]
    reference, nanogpt = rows[" reference (nanoGPT recipe) "], rows[" hookformer nanogpt "]
    assert reference[2] == nanogpt[2]  # the same parameter count
    assert abs(float(reference[6]) - float(nanogpt[6])) < 1e-3  # the same model and recipe train alike


@pytest.mark.slow
def test_the_lora_benchmark_trains_full_and_lora_fine_tuning_of_one_imported_model(tmp_path):
    done = subprocess.run([sys.executable, str(BENCHMARKS / "lora.py"), "--quick", "--threads", "1"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {cells[1].strip(): cells for cells in (line.split("|") for line in done.stdout.splitlines())
            if len(cells) > 7 and cells[1].strip() in ("full", "lora")}
    full, lora = (int(rows[name][3].replace(",", "")) for name in ("full", "lora"))  # trainable parameters
    assert 0 < lora < full


@pytest.mark.slow
def test_the_hf_import_benchmark_measures_the_import_beside_transformers(tmp_path):
    done = subprocess.run([sys.executable, str(BENCHMARKS / "hf_import.py"), "--quick"], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [line.split("|")[1].strip() for line in done.stdout.splitlines() if line.startswith("| ") and "x)" in line
            ] == ["hookformer import", "transformers from_pretrained"]
