"""Fixtures shared by the test modules."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hookformer.core.hookspecs import hookimpl

# Triton kernels run on a CPU only under Triton's interpreter, and the switch is read when a kernel is defined
# (module import), so it is set before any test module is collected. On a CUDA machine the kernels are compiled.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

#: Variables that change which plugins load; tests that run the command line start without them.
PLUGIN_ENV_VARS = ("HOOKFORMER_DISABLE_PLUGINS", "HOOKFORMER_DISABLE_PLUGIN_AUTOLOAD")


def _stray_plugins() -> str:
    """The entry points of the hookformer group that other distributions installed in this environment provide,
    comma-separated. The suite disables them (HOOKFORMER_DISABLE_PLUGINS), in this process and in every command it
    runs, so that it sees hookformer's own parts plus the plugins a test installs, and a stray or broken package in
    the environment cannot fail it."""
    from importlib.metadata import entry_points

    return ",".join(sorted({ep.name for ep in entry_points(group="hookformer")
                            if ep.dist is None or ep.dist.name != "hookformer"}))


STRAY_PLUGINS = _stray_plugins()
os.environ.pop("HOOKFORMER_DISABLE_PLUGIN_AUTOLOAD", None)
os.environ["HOOKFORMER_DISABLE_PLUGINS"] = STRAY_PLUGINS


def disabled_plugins(*names: str) -> str:
    """A HOOKFORMER_DISABLE_PLUGINS value that disables ``names`` besides the environment's stray plugins."""
    return ",".join(filter(None, [STRAY_PLUGINS, *names]))


def _clean_env(site: Path | None = None) -> dict[str, str]:
    """The current environment without plugin selection variables (but with the environment's stray plugins
    disabled), with ``site`` first on PYTHONPATH."""
    env = {key: value for key, value in os.environ.items() if key not in PLUGIN_ENV_VARS}
    env["HOOKFORMER_DISABLE_PLUGINS"] = STRAY_PLUGINS
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return env


@pytest.fixture(scope="session")
def pip_install(tmp_path_factory):
    """``pip_install(*package_dirs) -> env``: one real ``pip install --no-deps --no-build-isolation --target SITE``
    of the given package directories into a new folder (no network; the build backend must be installed), and an
    environment for subprocesses that sees them (SITE first on PYTHONPATH).

    The developer's environment is left alone: the packages, and the dist-info folders through which their entry
    points are found, exist only under SITE. Copies of the package directories are built, so the build leaves
    nothing (build/, *.egg-info) in the sources. With no directories, nothing is installed and the environment
    is the current one. Either way, variables that select plugins (HOOKFORMER_DISABLE_PLUGINS...) are removed.
    """

    def install(*package_dirs: Path) -> dict[str, str]:
        if not package_dirs:
            return _clean_env()
        work = tmp_path_factory.mktemp("pip")
        copies = []
        for i, source in enumerate(package_dirs):
            copy = work / "src" / f"{i}-{Path(source).name}"
            shutil.copytree(source, copy, ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__"))
            copies.append(str(copy))
        site = work / "site"
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
             "--disable-pip-version-check", "--quiet", "--target", str(site), *copies],
            capture_output=True, text=True, env={**os.environ, "PIP_ROOT_USER_ACTION": "ignore"},
        )
        if done.returncode != 0:
            pytest.fail(f"pip install {' '.join(copies)} failed:\n{done.stdout}\n{done.stderr}")
        return _clean_env(site)

    return install


@pytest.fixture(scope="session")
def make_plugin_package(tmp_path_factory):
    """``make_plugin_package(name, modules, entry_points, version="0.1.0") -> directory``: write a throwaway
    setuptools distribution ``name`` made of top-level ``modules`` ({module name: source}) with ``entry_points``
    ({entry point name: "module[:attribute]"}) in the entry-point group ``group`` (default ``hookformer``), ready
    for ``pip_install``."""

    def make(name: str, modules: dict[str, str], entry_points: dict[str, str], version: str = "0.1.0",
             group: str = "hookformer") -> Path:
        root = tmp_path_factory.mktemp("pkg") / name
        root.mkdir()
        for module, source in modules.items():
            (root / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        listed = ", ".join(f'"{module}"' for module in modules)
        eps = "\n".join(f'{ep} = "{value}"' for ep, value in entry_points.items())
        (root / "pyproject.toml").write_text(
            '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n\n'
            f'[project]\nname = "{name}"\nversion = "{version}"\n\n'
            f"[tool.setuptools]\npy-modules = [{listed}]\n\n"
            f"[project.entry-points.{group}]\n{eps}\n",
            encoding="utf-8",
        )
        return root

    return make


@pytest.fixture(scope="module")
def catalog():
    """The catalog of the installed plugins."""
    from hookformer.registry.catalog import Catalog

    return Catalog.load()


@pytest.fixture(scope="module")
def tok(catalog):
    """The byte tokenizer, built through the registry."""
    from hookformer.core.parts import BuildContext

    entry = catalog.get("tokenizer", "byte")
    return entry.build(entry.options_model()(), BuildContext(run_dir=Path(".")))


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Data caches of the session's own, never the user's (HOOKFORMER_CACHE)."""
    monkeypatch.setenv("HOOKFORMER_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def docs_corpus(tmp_path_factory) -> Path:
    """A small text corpus: the first 40 language reference topics of the Python documentation."""
    from pydoc_data.topics import topics

    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n\n".join(topics[name] for name in sorted(topics)[:40]), encoding="utf-8")
    return path


class CrashAtStep:
    """A hook object that stands for a crash (power loss, OOM kill) at the training record of ``step``: register it
    with ``run.assembly.register(CrashAtStep(6))`` to crash a run after its checkpoint of an earlier step."""

    def __init__(self, step: int):
        self.step = step

    @hookimpl
    def hookformer_step_end(self, record):
        if record["step"] == self.step:
            raise RuntimeError("simulated crash")
