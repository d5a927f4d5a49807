"""Conformance checks for part authors, shipped with hookformer (``hookformer.testing``): one kit per stage, each a
plain function that raises AssertionError naming what differs.

Check an attention kernel against the reference over exactly the cases its capabilities claim::

    import pytest
    from hookformer.testing import attention_cases, check_attention_kernel

    @pytest.mark.parametrize("case", attention_cases(MY_CAPABILITIES), ids=str)
    def test_my_kernel_conforms(case):
        check_attention_kernel(my_kernel, MY_CAPABILITIES, case)

The other kits: :func:`check_tokenizer` (with :func:`check_offsets` for a tokenizer that has ``encode_with_offsets``),
:func:`check_objective`, :func:`check_optimizer`, :func:`check_scheduler`, :func:`check_metric`, :func:`check_data`.
hookformer's pytest plugin (``hookformer.testing.pytest_plugin``) gives each as a fixture that builds a registered
part by name, as a run does (``tokenizer_conformance("mine")``...).
"""

from hookformer.testing.attention import AttentionCase, attention_cases, check_attention_kernel
from hookformer.testing.data import check_data
from hookformer.testing.metric import check_metric
from hookformer.testing.objective import check_objective
from hookformer.testing.optimizer import check_optimizer
from hookformer.testing.scheduler import check_scheduler
from hookformer.testing.tokenizer import MIXED_TEXTS, check_offsets, check_tokenizer

__all__ = ["AttentionCase", "MIXED_TEXTS", "attention_cases", "check_attention_kernel", "check_data", "check_metric",
           "check_objective", "check_offsets", "check_optimizer", "check_scheduler", "check_tokenizer"]
