"""The built-in attention kernels agree with the reference (values and gradients) on every input kind they take."""

import pytest
import torch
from hookformer.plugins.attention.naive import causal_mask, naive_attention
from hookformer.plugins.attention.sdpa import sdpa_attention


def _inputs(b=2, h=3, t_q=7, t_k=7, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, t, d, generator=g, dtype=torch.float64, requires_grad=True) for t in (t_q, t_k, t_k)]


def test_causal_mask_aligns_the_diagonal_to_the_end_when_queries_are_fewer_than_keys():
    mask = causal_mask(2, 5, "cpu")
    assert mask.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]


def test_naive_attention_is_softmax_of_scaled_scores_times_values():
    q, k, v = _inputs(b=1, h=1, t_q=3, t_k=3, d=4)
    expected = torch.softmax(q @ k.transpose(-2, -1) / 2.0, dim=-1) @ v
    torch.testing.assert_close(naive_attention(q, k, v), expected)


def test_naive_causal_attention_ignores_future_keys():
    q, k, v = _inputs(t_q=5, t_k=5)
    out = naive_attention(q, k, v, causal=True)
    k2, v2 = k.detach().clone(), v.detach().clone()
    k2[:, :, 3:] += 10.0
    v2[:, :, 3:] -= 10.0
    torch.testing.assert_close(naive_attention(q, k2, v2, causal=True)[:, :, :3], out[:, :, :3])


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("t_q,t_k", [(7, 7), (1, 1), (3, 9), (64, 64)])
@pytest.mark.parametrize("padded", [False, True])
def test_sdpa_matches_the_reference_in_values_and_gradients(causal, t_q, t_k, padded):
    q, k, v = _inputs(t_q=t_q, t_k=t_k)
    mask = None
    if padded:
        mask = torch.ones(2, t_k, dtype=torch.bool)
        mask[1, max(1, t_k - 2):] = False  # the second sequence ends in padding; every query still sees a key
    kwargs = dict(causal=causal, key_padding_mask=mask, scale=0.3)
    ref = naive_attention(q, k, v, **kwargs)
    out = sdpa_attention(q, k, v, **kwargs)
    torch.testing.assert_close(out, ref)
    grad = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad)
    out_grads = torch.autograd.grad(out, (q, k, v), grad)
    for got, want in zip(out_grads, ref_grads):
        torch.testing.assert_close(got, want)
