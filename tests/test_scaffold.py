"""``hookformer new-plugin STAGE NAME``: the package it writes installs and passes its own conformance tests
unchanged, for every stage; bad requests are user errors."""

import subprocess
import sys

import pytest

from hookformer.core.cli import main
from hookformer.core.parts import STAGES
from hookformer.core.scaffold import NOT_SCAFFOLDED


def scaffold_installed_and_tested(stage: str, tmp_path, pip_install) -> subprocess.CompletedProcess:
    """Scaffold a part of ``stage`` with the command line, pip-install the package, run its tests."""
    assert main(["new-plugin", stage, f"my_{stage}", "--dir", str(tmp_path)]) == 0
    package = tmp_path / f"hookformer-my_{stage}"
    env = pip_install(package)
    return subprocess.run([sys.executable, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider"], cwd=package,
                          env=env, capture_output=True, text=True, timeout=600)


def test_a_scaffolded_metric_package_installs_and_passes_its_own_tests(tmp_path, pip_install):
    done = scaffold_installed_and_tested("metric", tmp_path, pip_install)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("stage", [stage for stage in STAGES if stage not in ("metric", *NOT_SCAFFOLDED)])
def test_a_scaffolded_package_of_every_stage_installs_and_passes_its_own_tests(stage, tmp_path, pip_install):
    done = scaffold_installed_and_tested(stage, tmp_path, pip_install)
    assert done.returncode == 0, done.stdout + done.stderr
    assert " passed" in done.stdout and "skipped" not in done.stdout


def test_the_package_holds_the_entry_point_the_part_its_options_and_a_conformance_test(tmp_path):
    assert main(["new-plugin", "optimizer", "my_sgd", "--dir", str(tmp_path)]) == 0
    package = tmp_path / "hookformer-my_sgd"
    assert sorted(p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file()) == [
        "README.md", "hookformer_my_sgd.py", "pyproject.toml", "tests/test_my_sgd.py"]
    assert '[project.entry-points.hookformer]\nmy_sgd = "hookformer_my_sgd"' in (package / "pyproject.toml").read_text()
    module = (package / "hookformer_my_sgd.py").read_text()
    assert "class MySgdOptions(PartOptions)" in module and "def hookformer_parts():" in module
    assert 'optimizer_conformance("my_sgd")' in (package / "tests" / "test_my_sgd.py").read_text()


@pytest.mark.parametrize("args,fragment", [
    (["new-plugin", "layer", "mine"], 'unknown stage "layer"'),
    (["new-plugin", "metric", "My-Metric"], 'invalid part name "My-Metric"'),
    (["new-plugin", "metric", "accuracy"], 'a metric part named "accuracy" is already registered'),
])
def test_an_unknown_stage_an_invalid_name_or_a_taken_name_is_a_user_error(args, fragment, tmp_path, capsys):
    assert main([*args, "--dir", str(tmp_path)]) == 2
    assert fragment in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_an_existing_package_folder_is_a_user_error_and_is_left_alone(tmp_path, capsys):
    (tmp_path / "hookformer-mine").mkdir()
    (tmp_path / "hookformer-mine" / "keep.txt").write_text("mine")
    assert main(["new-plugin", "metric", "mine", "--dir", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "hookformer-mine").iterdir()] == ["keep.txt"]


def test_a_stage_without_a_template_says_where_to_start_instead(capsys, tmp_path):
    assert main(["new-plugin", "family", "phi", "--dir", str(tmp_path)]) == 2
    assert "plugins/families/gpt2.py" in capsys.readouterr().err and not any(tmp_path.iterdir())
