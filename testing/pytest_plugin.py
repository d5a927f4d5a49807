"""hookformer's pytest plugin (entry point ``pytest11``): fixtures for part authors' conformance tests.

``hookformer_catalog``: the catalog of registered parts, as ``hookformer train`` sees it.

Each ``<stage>_conformance`` fixture builds a registered part by name with ``options`` (validated by its options
model, as a config's are) the way a run builds it, an :class:`~hookformer.core.assemble.Assembly` of a tiny config
(byte tokenizer, a one-layer transformer, text data from a small corpus the fixture writes), and runs the stage's
kit from :mod:`hookformer.testing`; ``sections`` replace the tiny config's other sections (e.g. the data an
objective needs). Each raises AssertionError naming what differs.

- ``attention_conformance(NAME, options={...}, reference=fn)``: every case the kernel's capabilities claim against
  ``reference`` (default: softmax attention; a kernel that declares a ``variant`` must give the function it
  computes); returns the number of cases checked.
- ``tokenizer_conformance(NAME, options={...}, other_options=None)``: round trip, special ids, batch encoding,
  fingerprint, offsets (when it has ``encode_with_offsets``), and the same mapping when built again in the run
  directory; with ``other_options``, a tokenizer built with them that maps text otherwise must have another
  fingerprint. Trainable tokenizers train on the fixture's corpus.
- ``objective_conformance(NAME, options={...}, batch=None, **sections)``: result fields, a summed loss, gradient
  accumulation (4 x 2 == 1 x 8) on ``batch`` (default: the first 8 training examples of the data).
- ``optimizer_conformance(NAME, options={...})``: built from the engine's parameter groups; resumes bit-identically.
- ``scheduler_conformance(NAME, options={...}, total_steps=20)``: rates reported, finite, resumed from state_dict.
- ``metric_conformance(NAME, results, expected, options={...}, label_names=None, order_invariant=True)``:
  ``expected`` values over the ``ObjectiveResult`` list ``results``.
- ``data_conformance(NAME, options={...}, tokenizer="byte")``: examples tables or a resumable training stream.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

#: The tiny run every fixture builds its part in: the part under test replaces its section.
_TINY_SEQ = 16


def _tiny_raw(corpus: Path) -> dict:
    return {
        "data": {"name": "text", "paths": [str(corpus)], "block_size": _TINY_SEQ, "val_fraction": 0.2},
        "tokenizer": {"name": "byte"},
        "model": {"name": "transformer", "n_layer": 1, "n_head": 2, "d_model": 16, "dropout": 0.0},
        "attention": {"name": "sdpa"},
        "objective": {"name": "clm"},
        "optimizer": {"name": "adamw"},
        "scheduler": {"name": "constant"},
        "metrics": [], "hooks": [],
        "train": {"max_steps": 20, "batch_size": 8, "device": "cpu", "progress": False, "sample_tokens": 0},
    }


@pytest.fixture(scope="session")
def hookformer_catalog():
    from hookformer.registry.catalog import Catalog

    return Catalog.load()


@pytest.fixture
def hookformer_tiny_config(hookformer_catalog, tmp_path):
    """``hookformer_tiny_config(**sections) -> RunConfig``: the validated tiny config with ``sections`` replaced
    (a section is a part name or a mapping with ``name`` and options)."""
    from hookformer.core.config import validate
    from hookformer.testing.tokenizer import corpus

    path = tmp_path / "hookformer-corpus.txt"
    path.write_text(corpus(), encoding="utf-8")

    def make(**sections):
        return validate({**_tiny_raw(path), **sections}, hookformer_catalog)

    return make


def _section(name: str, options: dict | None) -> dict:
    return {"name": name, **(options or {})}


@pytest.fixture
def attention_conformance(hookformer_catalog, tmp_path):
    from hookformer.core.config import validate_options
    from hookformer.core.parts import BuildContext
    from hookformer.testing.attention import attention_cases, check_attention_kernel

    def run(name: str, device: str = "cpu", options: dict | None = None, reference=None) -> int:
        entry = hookformer_catalog.get("attention", name)
        capabilities = entry.capabilities()
        assert capabilities is not None, f"attention kernel {name} declares no capabilities"
        validated = validate_options(entry.options_model(), options or {}, {"catalog": hookformer_catalog})
        kernel = entry.build(validated, BuildContext(run_dir=tmp_path, catalog=hookformer_catalog))
        cases = attention_cases(capabilities, device=device)
        for case in cases:
            check_attention_kernel(kernel, capabilities, case, device=device, reference=reference)
        return len(cases)

    return run


@pytest.fixture
def tokenizer_conformance(hookformer_tiny_config, tmp_path):
    from hookformer.core.assemble import Assembly
    from hookformer.testing.tokenizer import check_tokenizer

    def trained(name: str, options: dict | None, run_dir, sections: dict):
        """A new run's tokenizer (trained on the data if it trains) and a function that rebuilds it as a resumed
        run does, from its files in ``run_dir`` without data."""
        config = hookformer_tiny_config(tokenizer=_section(name, options), **sections)
        first = Assembly(config, run_dir)
        first.data()
        return first.tokenizer(), lambda: Assembly(config, run_dir).tokenizer()

    def run(name: str, options: dict | None = None, other_options: dict | None = None, **sections) -> None:
        tokenizer, rebuild = trained(name, options, tmp_path / "tokenizer-run", sections)
        other = None if other_options is None else trained(name, other_options, tmp_path / "other-run", sections)[0]
        check_tokenizer(tokenizer, rebuild=rebuild, other=other)

    return run


@pytest.fixture
def objective_conformance(hookformer_tiny_config, tmp_path):
    import torch

    from hookformer.core.assemble import Assembly
    from hookformer.core.sampler import as_table, table_rows
    from hookformer.testing.objective import check_objective

    def run(name: str, options: dict | None = None, batch: dict | None = None, **sections) -> None:
        torch.manual_seed(0)
        assembly = Assembly(hookformer_tiny_config(objective=_section(name, options), **sections),
                            tmp_path / "objective-run")
        if batch is None:
            train = assembly.prepare_data()["train"]
            batch = train.next_batch(8) if hasattr(train, "next_batch") else table_rows(as_table(train), slice(8))
        check_objective(assembly.objective(), assembly.model(), batch)

    return run


@pytest.fixture
def optimizer_conformance(hookformer_tiny_config, tmp_path):
    import torch

    from hookformer.core.assemble import Assembly
    from hookformer.core.params import param_groups
    from hookformer.core.parts import Shapes
    from hookformer.testing.optimizer import check_optimizer

    def run(name: str, options: dict | None = None, **sections) -> None:
        config = hookformer_tiny_config(optimizer=_section(name, options), **sections)
        shapes = Shapes(vocab_size=64, max_seq_len=_TINY_SEQ)

        def make_model():
            torch.manual_seed(0)
            return Assembly(config, tmp_path / "optimizer-run", shapes=shapes).model()

        assembly = Assembly(config, tmp_path / "optimizer-run", shapes=shapes)

        def build(model):
            ctx = replace(assembly.context(), model=model, param_groups=param_groups(model, config.train.head_lr))
            return assembly.build("optimizer", config.parts["optimizer"], ctx)

        check_optimizer(build, make_model, name=name)

    return run


@pytest.fixture
def scheduler_conformance(hookformer_tiny_config, tmp_path):
    from hookformer.core.assemble import Assembly
    from hookformer.core.parts import Shapes
    from hookformer.testing.scheduler import check_scheduler

    def run(name: str, options: dict | None = None, total_steps: int = 20, **sections) -> None:
        config = hookformer_tiny_config(scheduler=_section(name, options), **sections)
        assembly = Assembly(config, tmp_path / "scheduler-run", shapes=Shapes(64, _TINY_SEQ))

        def build(optimizer, steps: int):
            ctx = replace(assembly.context(), optimizer=optimizer, total_steps=steps)
            return assembly.build("scheduler", config.parts["scheduler"], ctx)

        check_scheduler(build, total_steps=total_steps)

    return run


@pytest.fixture
def metric_conformance(hookformer_catalog, tmp_path):
    from hookformer.core.config import resolve_part
    from hookformer.core.parts import BuildContext
    from hookformer.testing.metric import check_metric

    def run(name: str, results: list, expected: dict, options: dict | None = None,
            label_names: list[str] | None = None, order_invariant: bool = True) -> None:
        choice = resolve_part("metrics.0", "metric", _section(name, options), hookformer_catalog)
        ctx = BuildContext(run_dir=tmp_path, catalog=hookformer_catalog,
                           label_names=tuple(label_names) if label_names else None)
        check_metric(choice.build(ctx), results, expected, order_invariant=order_invariant)

    return run


@pytest.fixture
def data_conformance(hookformer_tiny_config, tmp_path):
    from hookformer.core.assemble import Assembly
    from hookformer.testing.data import check_data

    def run(name: str, options: dict | None = None, tokenizer: str | dict = "byte", **sections) -> None:
        config = hookformer_tiny_config(data=_section(name, options), tokenizer=tokenizer, **sections)
        run_dir = tmp_path / "data-run"
        assembly = Assembly(config, run_dir)
        source = assembly.data()
        check_data(source, assembly.tokenizer(), rebuild=lambda: Assembly(config, run_dir).data())

    return run
