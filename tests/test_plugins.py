"""Third-party plugins, end to end: real pip installs into isolated folders, then the ``hookformer`` command line.

Each module-scoped ``*_env`` fixture is one install folder holding the distributions one group of tests needs, so no
test depends on what another installed.
"""

import json
import math
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from pydoc_data.topics import topics

import pytest
import yaml
from conftest import disabled_plugins
from hookformer.core.parts import STAGES

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "hookformer-bits-per-token"
HOOKFORMER = f"hookformer {version('hookformer')}"
#: One line of `hookformer plugins list`: "  NAME  DESCRIPTION  [DISTRIBUTION VERSION]".
PART_LINE = re.compile(r"^  (\S+)\s+(.*)  \[(.+)\]$")


def metric_plugin(name: str, override: bool = False) -> str:
    """Source of a plugin module that registers the metric ``name`` (built by the example's factory)."""
    return f"""
        from hookformer.core.hookspecs import hookimpl
        from hookformer.core.parts import PartSpec


        @hookimpl
        def hookformer_parts():
            return [PartSpec("metric", "{name}", "a metric from a throwaway plugin",
                             factory="hookformer_bits_per_token:build", override={override})]
        """


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """``cli(env, *args, **more_env)``: run ``python -m hookformer ARGS`` in a scratch directory."""
    cwd = tmp_path_factory.mktemp("cwd")

    def run(env: dict, *args: str, **more_env: str) -> subprocess.CompletedProcess:
        more_env = {key: disabled_plugins(value) if key == "HOOKFORMER_DISABLE_PLUGINS" else value
                    for key, value in more_env.items()}  # the environment's stray plugins stay disabled
        return subprocess.run([sys.executable, "-m", "hookformer", *args], cwd=cwd, env={**env, **more_env},
                              capture_output=True, text=True, timeout=300)

    return run


def listed(stdout: str) -> dict[str, dict[str, str]]:
    """`hookformer plugins list` output -> stage -> part name -> provider."""
    stages: dict[str, dict[str, str]] = {}
    for line in stdout.split("\n\nplugins that could not be loaded")[0].splitlines():
        if not line.startswith(" "):
            current = stages.setdefault(line.rstrip(":"), {})
        else:
            match = PART_LINE.match(line)
            assert match, f"unexpected line in plugins list: {line!r}"
            current[match[1]] = match[3]
    return stages


def assert_user_error(done: subprocess.CompletedProcess, *fragments: str, one_line: bool = True) -> None:
    """Exit code 2 and one "hookformer: error:" message, no traceback, that contains every fragment."""
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("hookformer: error: "), done.stderr
    if one_line:
        assert done.stderr.count("\n") == 1, done.stderr
    for fragment in fragments:
        assert fragment in done.stderr, f"{fragment!r} is not in the message: {done.stderr}"


def assert_ok(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def assert_refused_and_listed(env: dict, cli, *fragments: str, flags: tuple = ()) -> None:
    """The plugin problem stops a command that runs a config (exit 2, one paragraph with every fragment), while
    `plugins list` still lists what loaded and reports the problem after the list."""
    assert_user_error(cli(env, *flags, "train", "--run-dir", "never-made"), *fragments)
    listing = cli(env, *flags, "plugins", "list")
    assert_ok(listing)
    assert listed(listing.stdout)["metric"]["loss"] == HOOKFORMER
    problems = listing.stdout.split("plugins that could not be loaded")[1]
    for fragment in fragments:
        assert fragment in " ".join(problems.split()), f"{fragment!r} is not reported after the list: {problems}"
    assert "could not be loaded" in listing.stderr


# --- the example plugin ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def example_env(pip_install):
    return pip_install(EXAMPLE)


def test_builtin_parts_of_every_stage_are_listed_as_provided_by_hookformer(pip_install, cli):
    done = cli(pip_install(), "plugins", "list")
    assert_ok(done)
    stages = listed(done.stdout)
    assert list(stages) == list(STAGES)
    for stage, parts in stages.items():
        assert parts, f"no built-in {stage} part"
        assert set(parts.values()) == {HOOKFORMER}, stage
    assert "bits_per_token" not in stages["metric"]  # the example is not installed in this environment


def test_an_installed_plugin_is_listed_under_its_stage_with_its_distribution_and_version(example_env, cli):
    done = cli(example_env, "plugins", "list")
    assert_ok(done)
    stages = listed(done.stdout)
    assert stages["metric"]["bits_per_token"] == "hookformer-bits-per-token 0.1.0"
    assert stages["metric"]["loss"] == HOOKFORMER  # the built-ins are still there


def test_plugins_show_prints_an_installed_parts_description_options_and_entry_point(example_env, cli):
    done = cli(example_env, "plugins", "show", "bits_per_token")
    assert_ok(done)
    out = done.stdout
    assert out.startswith("metric/bits_per_token  [hookformer-bits-per-token 0.1.0, entry point bits_per_token = "
                          "hookformer_bits_per_token]")
    assert "mean loss / ln 2" in out
    assert "digits: int | None (>= 0) = None" in out  # type, bounds and default, readable
    assert "round the value to this many decimals" in out  # the option's documentation


def test_a_run_reports_the_metric_of_an_installed_plugin_in_metrics_jsonl(example_env, cli, tmp_path):
    corpus = tmp_path / "corpus.txt"
    text = ""
    for name in sorted(topics):
        if len(text) >= 50_000:
            break
        text += topics[name] + "\n\n"
    corpus.write_text(text, encoding="utf-8")
    config = {
        "tokenizer": {"name": "byte"},
        "data": {"name": "text", "paths": [str(corpus)], "block_size": 32},
        "model": {"name": "transformer", "n_layer": 1, "d_model": 32, "n_head": 2},
        "metrics": ["loss", "bits_per_token"],
        "callbacks": [],
        "train": {"max_steps": 4, "eval_every": 2, "eval_batches": 2, "batch_size": 4, "sample_tokens": 0,
                  "progress": False, "device": "cpu"},
    }
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    run_dir = tmp_path / "run"

    done = cli(example_env, "train", str(config_path), "--run-dir", str(run_dir),
               HOOKFORMER_CACHE=str(tmp_path / "cache"))
    assert_ok(done)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in evals] == [2, 4]
    for record in evals:
        assert record["val_bits_per_token"] == pytest.approx(record["val_loss"] / math.log(2), rel=1e-6)


# --- clashes and duplicates -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clash_env(pip_install, make_plugin_package):
    rival = make_plugin_package("hookformer-bpt-rival", {"bpt_rival": metric_plugin("bits_per_token")},
                                {"bpt_rival": "bpt_rival"}, version="0.2.0")
    return pip_install(EXAMPLE, rival)


def test_two_distributions_registering_the_same_part_is_an_error_naming_both(clash_env, cli):
    assert_refused_and_listed(clash_env, cli, '"bits_per_token"', "hookformer-bits-per-token 0.1.0",
                              "hookformer-bpt-rival 0.2.0", "override=True")


@pytest.fixture(scope="module")
def override_env(pip_install, make_plugin_package):
    replacement = make_plugin_package("hookformer-bpt-fast", {"bpt_fast": metric_plugin("bits_per_token", True)},
                                      {"bpt_fast": "bpt_fast"}, version="0.3.0")
    return pip_install(EXAMPLE, replacement)


def test_a_part_declared_with_override_replaces_the_other_distributions_part_and_says_so(override_env, cli):
    done = cli(override_env, "plugins", "list")
    assert_ok(done)
    assert listed(done.stdout)["metric"]["bits_per_token"] == "hookformer-bpt-fast 0.3.0"
    warning = done.stderr
    assert "metric/bits_per_token" in warning and "overrides" in warning
    assert "hookformer-bpt-fast 0.3.0" in warning and "hookformer-bits-per-token 0.1.0" in warning


@pytest.fixture(scope="module")
def twice_env(pip_install, make_plugin_package):
    twice = make_plugin_package("hookformer-twice", {"twice_plugin": metric_plugin("twice")},
                                {"twice": "twice_plugin", "twice_alias": "twice_plugin"})
    return pip_install(EXAMPLE, twice)


def test_the_same_plugin_module_reached_through_two_entry_points_is_registered_once(twice_env, cli):
    done = cli(twice_env, "plugins", "list")
    assert_ok(done)
    assert done.stderr == ""
    assert listed(done.stdout)["metric"]["twice"] == "hookformer-twice 0.1.0"
    show = cli(twice_env, "plugins", "show", "twice")
    assert_ok(show)
    assert "hookformer-twice 0.1.0, entry point twice = twice_plugin" in show.stdout


# --- plugins that cannot be loaded ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broken_env(pip_install, make_plugin_package):
    """One distribution, two entry points: ``explodes`` fails to import, ``works`` registers the metric
    ``still_here`` (so skipping one entry point visibly keeps the other)."""
    broken = make_plugin_package(
        "hookformer-broken",
        {"explodes_plugin": "import hookformer_missing_dependency\n", "works_plugin": metric_plugin("still_here")},
        {"explodes": "explodes_plugin", "works": "works_plugin"},
    )
    return pip_install(EXAMPLE, broken)


def test_a_plugin_that_fails_to_import_is_an_error_naming_its_entry_point_and_distribution(broken_env, cli):
    assert_refused_and_listed(broken_env, cli, 'plugin "explodes"', "hookformer-broken 0.1.0",
                              "hookformer_missing_dependency", "-p no:explodes")


@pytest.mark.parametrize("args, env", [
    (["-p", "no:explodes"], {}),
    ([], {"HOOKFORMER_DISABLE_PLUGINS": "explodes"}),
    ([], {"HOOKFORMER_DISABLE_PLUGINS": "unrelated, explodes"}),
], ids=["-p no:NAME", "HOOKFORMER_DISABLE_PLUGINS", "HOOKFORMER_DISABLE_PLUGINS list"])
def test_a_plugin_disabled_by_name_is_skipped_and_the_others_still_load(broken_env, cli, args, env):
    done = cli(broken_env, "plugins", "list", *args, **env)
    assert_ok(done)
    metrics = listed(done.stdout)["metric"]
    assert metrics["still_here"] == "hookformer-broken 0.1.0"  # the distribution's other entry point
    assert metrics["bits_per_token"] == "hookformer-bits-per-token 0.1.0"


@pytest.mark.parametrize("args, env", [
    (["--no-autoload"], {}),
    ([], {"HOOKFORMER_DISABLE_PLUGIN_AUTOLOAD": "1"}),
], ids=["--no-autoload", "HOOKFORMER_DISABLE_PLUGIN_AUTOLOAD"])
def test_without_autoload_only_hookformers_own_parts_and_those_named_with_p_load(broken_env, cli, args, env):
    done = cli(broken_env, "plugins", "list", *args, **env)
    assert_ok(done)
    stages = listed(done.stdout)
    assert {provider for parts in stages.values() for provider in parts.values()} == {HOOKFORMER}

    named = cli(broken_env, "plugins", "list", *args, "-p", "works", "-p", "bits_per_token", **env)
    assert_ok(named)
    metrics = listed(named.stdout)["metric"]
    assert "still_here" in metrics and "bits_per_token" in metrics

    assert_user_error(cli(broken_env, "train", *args, "-p", "explodes", **env),
                      'plugin "explodes"', "hookformer-broken 0.1.0")


@pytest.mark.parametrize("args", [["-p", "no:explodes", "plugins", "list"], ["--no-autoload", "plugins", "list"]],
                         ids=["-p no:NAME", "--no-autoload"])
def test_plugin_flags_before_the_subcommand_are_honoured(broken_env, cli, args):
    assert_ok(cli(broken_env, *args))


def test_debug_shows_the_traceback_of_a_plugin_error(broken_env, cli):
    done = cli(broken_env, "train", "--debug")
    assert done.returncode != 0
    assert "Traceback" in done.stderr
    assert "ModuleNotFoundError" in done.stderr and "hookformer_missing_dependency" in done.stderr  # the cause
    assert "PluginError" in done.stderr and 'plugin "explodes"' in done.stderr


@pytest.mark.slow
def test_a_broken_package_in_the_environment_cannot_fail_the_test_suite(broken_env):
    # The package really breaks hookformer for a user of this environment...
    started = subprocess.run([sys.executable, "-m", "hookformer", "train"], env=broken_env, capture_output=True,
                             text=True, timeout=120)
    assert started.returncode == 2 and 'plugin "explodes"' in started.stderr
    # ...but the suite, run in that environment, builds its catalogs without it.
    tests = Path(__file__).resolve().parent
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                           str(tests / "test_config.py")], env=broken_env, capture_output=True, text=True,
                          timeout=300, cwd=tests.parent)
    assert done.returncode == 0, done.stdout[-3000:]
    assert " passed" in done.stdout.splitlines()[-1]


@pytest.fixture(scope="module")
def bad_hook_env(pip_install, make_plugin_package):
    """``bad_hook`` takes an argument the spec does not have; ``misspelled_hook`` implements a hook no spec names."""
    bad = make_plugin_package("hookformer-bad-hook", {"bad_hook_plugin": """
        from hookformer.core.hookspecs import hookimpl


        @hookimpl
        def hookformer_parts(nonexistent_arg):
            return []
        """, "misspelled_hook_plugin": """
        from hookformer.core.hookspecs import hookimpl


        @hookimpl
        def hookformer_part():
            return []
        """}, {"bad_hook": "bad_hook_plugin", "misspelled_hook": "misspelled_hook_plugin"})
    return pip_install(bad)


def test_a_hook_implementation_with_arguments_outside_the_spec_is_an_error_naming_the_plugin(bad_hook_env, cli):
    assert_refused_and_listed(bad_hook_env, cli, 'plugin "bad_hook"', "hookformer-bad-hook 0.1.0", "nonexistent_arg",
                              flags=("-p", "no:misspelled_hook"))


def test_a_hook_implementation_that_no_spec_names_is_an_error_naming_the_plugin(bad_hook_env, cli):
    assert_refused_and_listed(bad_hook_env, cli, 'plugin "misspelled_hook"', "hookformer-bad-hook 0.1.0",
                              "hookformer_part", flags=("-p", "no:bad_hook"))


def test_every_plugin_problem_is_reported_at_once_on_one_line(bad_hook_env, cli):
    assert_refused_and_listed(bad_hook_env, cli, 'plugin "bad_hook"', "nonexistent_arg", "-p no:bad_hook",
                              'plugin "misspelled_hook"', "hookformer_part", "-p no:misspelled_hook")
    assert_user_error(cli(bad_hook_env, "data"), "2 plugin problems", '(1) plugin "bad_hook"',
                      '(2) plugin "misspelled_hook"')


@pytest.fixture(scope="module")
def future_env(pip_install, make_plugin_package):
    future = make_plugin_package("hookformer-future", {"future_plugin": """
        from hookformer.core.hookspecs import hookimpl

        HOOKFORMER_API = ">=2"


        @hookimpl
        def hookformer_parts():
            return []
        """}, {"future_api": "future_plugin"}, version="2.0.0")
    return pip_install(future)


def test_a_plugin_made_for_another_api_version_is_refused_naming_it_and_both_versions(future_env, cli):
    from hookformer import API_VERSION

    assert_refused_and_listed(future_env, cli, 'plugin "future_api"', "hookformer-future 2.0.0", "API >=2",
                              f"provides API {API_VERSION}", "-p no:future_api")
