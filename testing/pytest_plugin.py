"""hookformer's pytest plugin (entry point ``pytest11``): fixtures for part authors' conformance tests.

``hookformer_catalog``: the catalog of registered parts, as ``hookformer train`` sees it.
``attention_conformance``: ``attention_conformance(NAME, options={...}, reference=fn)`` builds the registered
attention kernel NAME with ``options`` (validated by its options model, as a config's are), runs it over every case
its capabilities claim and returns the number of cases checked; it raises on the first case that differs from
``reference`` (default: softmax attention; a kernel that declares a ``variant`` must give the function it computes).
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def hookformer_catalog():
    from hookformer.registry.catalog import Catalog

    return Catalog.load()


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
