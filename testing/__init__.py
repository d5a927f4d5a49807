"""Conformance checks for part authors, shipped with hookformer (``hookformer.testing``).

Check an attention kernel against the reference over exactly the cases its capabilities claim::

    import pytest
    from hookformer.testing import attention_cases, check_attention_kernel

    @pytest.mark.parametrize("case", attention_cases(MY_CAPABILITIES), ids=str)
    def test_my_kernel_conforms(case):
        check_attention_kernel(my_kernel, MY_CAPABILITIES, case)

The same checks are available as fixtures from hookformer's pytest plugin (see ``hookformer.testing.pytest_plugin``).
"""

from hookformer.testing.attention import AttentionCase, attention_cases, check_attention_kernel

__all__ = ["AttentionCase", "attention_cases", "check_attention_kernel"]
