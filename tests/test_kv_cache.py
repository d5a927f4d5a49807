"""The decoder's KV cache: prefill plus token-by-token decoding gives the logits of the uncached forward pass over the
whole sequence, for every position encoding, grouped-query attention and QK-norm, left padding, and every built-in
kernel; ``reorder`` selects and reorders batch rows; kernels that cannot attend over cached keys are refused."""

import pytest
import torch
from hookformer.core.capabilities import AttentionCapabilities, CheckedKernel
from hookformer.core.errors import ConfigError, HookformerError
from hookformer.plugins.attention.naive import naive_attention
from hookformer.plugins.attention.sdpa import sdpa_attention
from hookformer.plugins.attention.triton_flash import TritonFlashAttention, TritonFlashOptions
from hookformer.plugins.models.transformer import Transformer, TransformerOptions

KERNELS = {"naive": lambda: naive_attention, "sdpa": lambda: sdpa_attention,
           "triton_flash": lambda: TritonFlashAttention(TritonFlashOptions())}


def tiny_decoder(attention, **overrides):
    torch.manual_seed(0)
    # head dim 16: triton_flash's smallest; one key/value head for two query heads (grouped-query attention).
    options = {"n_layer": 2, "n_head": 2, "n_kv_head": 1, "d_model": 32, "qk_norm": True, **overrides}
    return Transformer(TransformerOptions(**options), attention, vocab_size=23, max_seq_len=12).eval()


def left_padded(b=2, t=7, pads=(0, 3)):
    ids = torch.randint(1, 23, (b, t), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(b, t, dtype=torch.long)
    for row, n in enumerate(pads):
        mask[row, :n] = 0
        ids[row, :n] = 0
    return ids, mask


def decode_cached(model, ids, mask, prefill):
    """Logits (B, T, V): the first ``prefill`` tokens in one cached call, then one token per call."""
    cache = model.new_cache()
    pieces = [model(ids[:, :prefill], mask[:, :prefill], cache=cache)]
    for t in range(prefill, ids.shape[1]):
        pieces.append(model(ids[:, t:t + 1], mask[:, :t + 1], cache=cache))
    assert cache.length == ids.shape[1]
    return torch.cat(pieces, dim=1)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("positions", ["learned", "sinusoidal", "rope"])
def test_prefill_then_token_by_token_cached_logits_equal_the_uncached_forward_on_left_padded_batches(kernel,
                                                                                                    positions):
    model = tiny_decoder(KERNELS[kernel](), positions=positions)
    ids, mask = left_padded()
    with torch.no_grad():
        full = model(ids, mask)
        cached = decode_cached(model, ids, mask, prefill=4)
    real = mask.bool()
    torch.testing.assert_close(cached[real], full[real], rtol=0, atol=1e-5)


def test_cached_decoding_without_padding_and_without_an_attention_mask_equals_the_uncached_forward():
    model = tiny_decoder(sdpa_attention, positions="rope", n_kv_head=None, qk_norm=False)
    ids = torch.randint(0, 23, (3, 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        cache = model.new_cache()
        cached = torch.cat([model(ids[:, t:t + 1], cache=cache) for t in range(6)], dim=1)
        torch.testing.assert_close(cached, model(ids), rtol=0, atol=1e-5)


def test_reorder_selects_duplicates_and_drops_batch_rows_in_place():
    model = tiny_decoder(naive_attention, positions="rope")
    ids, mask = left_padded(b=3, t=6, pads=(0, 2, 1))
    with torch.no_grad():
        cache = model.new_cache()
        model(ids[:, :4], mask[:, :4], cache=cache)
        # Beam search: row 2 twice and row 0; then the finished first row dropped.
        for index in (torch.tensor([2, 0, 2]), torch.tensor([1, 2])):
            cache.reorder(index)
            ids, mask = ids[index], mask[index]
        assert cache.length == 4 and cache.self_attn[0].k.shape[0] == 2
        step = model(ids[:, 4:6], mask, cache=cache)
        torch.testing.assert_close(step, model(ids, mask)[:, 4:6], rtol=0, atol=1e-5)


def test_a_kernel_without_unequal_lengths_is_refused_for_cached_steps_with_how_to_generate_instead():
    capabilities = AttentionCapabilities(unequal_lengths=False)
    model = tiny_decoder(CheckedKernel("equal_only", naive_attention, capabilities))
    ids, mask = left_padded()
    cache = model.new_cache()
    model(ids[:, :3], mask[:, :3], cache=cache)  # the prefill is a T_q == T_k call
    with pytest.raises(HookformerError, match="cannot attend over cached keys.*use_cache: false"):
        model(ids[:, 3:4], mask[:, :4], cache=cache)


def test_an_encoder_has_no_cache_and_a_mask_that_misses_the_cached_tokens_is_refused():
    with pytest.raises(ConfigError, match="bidirectional encoder"):
        tiny_decoder(naive_attention, causal=False).new_cache()
    model = tiny_decoder(naive_attention)
    ids, mask = left_padded()
    cache = model.new_cache()
    model(ids[:, :3], mask[:, :3], cache=cache)
    with pytest.raises(ConfigError, match="every token so far: expected 4 columns"):
        model(ids[:, 3:4], mask[:, 3:4], cache=cache)
