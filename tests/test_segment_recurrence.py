"""Segment recurrence (Transformer-XL, ``memory_length``): the logits of consecutive segments computed with the
segment memory equal a written-out reference (per block: the previous segments' detached input hidden states
concatenated before the segment's, projected to keys and values by the current weights, RoPE with the segment's
positions after the memory's, a causal mask aligned to the end), for every built-in kernel; with a memory that holds
the whole past they equal the forward pass over the concatenated sequence; no gradient reaches past segments; what
the memory cannot read is refused. SegmentStreams, the batch order that feeds it, continues each row's stream from
batch to batch and resumes from its state."""

import math

import pytest
import torch
import torch.nn.functional as F
from hookformer.core.config import default_recipe, merge, validate
from hookformer.core.errors import ConfigError
from hookformer.core.sampler import SegmentStreams
from hookformer.plugins.attention.naive import naive_attention
from hookformer.plugins.attention.sdpa import sdpa_attention
from hookformer.plugins.attention.triton_flash import TritonFlashAttention, TritonFlashOptions
from hookformer.plugins.models.encoder_decoder import EncoderDecoderOptions
from hookformer.plugins.models.transformer import Transformer, TransformerOptions
from hookformer.registry.catalog import Catalog

KERNELS = {"naive": lambda: naive_attention, "sdpa": lambda: sdpa_attention,
           "triton_flash": lambda: TritonFlashAttention(TritonFlashOptions())}
VOCAB, SEGMENT = 23, 5


def tiny_xl(attention, memory_length, **overrides):
    torch.manual_seed(0)
    # head dim 16 (triton_flash's smallest); grouped-query attention and QK-norm, so the reference covers them.
    options = {"n_layer": 2, "n_head": 2, "n_kv_head": 1, "d_model": 32, "qk_norm": True, "positions": "rope",
               "memory_length": memory_length, **overrides}
    return Transformer(TransformerOptions(**options), attention, vocab_size=VOCAB, max_seq_len=SEGMENT).eval()


def stream(b=2, segments=3):
    return torch.randint(0, VOCAB, (b, segments * SEGMENT), generator=torch.Generator().manual_seed(1))


def rope(x, start, base=10000.0):
    """Pairs (x[2i], x[2i+1]) as complex numbers times exp(1j * position * base^(-2i/D)), positions from start."""
    d = x.shape[-1]
    positions = torch.arange(start, start + x.shape[-2], dtype=torch.float64)
    angles = positions[:, None] * base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    turned = torch.view_as_complex(x.double().unflatten(-1, (d // 2, 2)).contiguous()) * torch.polar(
        torch.ones_like(angles), angles)
    return torch.view_as_real(turned).flatten(-2).to(x.dtype)


def reference_block(block, x, past, n_head, n_kv_head):
    """One pre-norm block of Transformer-XL written out: ``past`` (B, M, C) the detached inputs of this block in the
    previous segments, or None."""
    attn = block.attn
    b, t, c = x.shape
    d = c // n_head
    context = x if past is None else torch.cat((past, x), dim=1)
    m = context.shape[1] - t
    w, bias = attn.qkv.weight, attn.qkv.bias
    normed = F.layer_norm(context, (c,), block.norm1.weight, block.norm1.bias, block.norm1.eps)
    q = F.linear(normed[:, m:], w[:c], bias[:c]).view(b, t, n_head, d).transpose(1, 2)
    k = F.linear(normed, w[c:c + n_kv_head * d], bias[c:c + n_kv_head * d]).view(b, m + t, n_kv_head, d)
    v = F.linear(normed, w[c + n_kv_head * d:], bias[c + n_kv_head * d:]).view(b, m + t, n_kv_head, d)
    k, v = k.transpose(1, 2), v.transpose(1, 2)
    q = F.rms_norm(q, (d,), attn.q_norm.weight, attn.q_norm.eps)
    k = F.rms_norm(k, (d,), attn.k_norm.weight, attn.k_norm.eps)
    q, k = rope(q, m), rope(k, 0)  # the segment's tokens sit after the memory's
    k, v = k.repeat_interleave(n_head // n_kv_head, 1), v.repeat_interleave(n_head // n_kv_head, 1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    # Query i (position m + i) sees keys 0..m + i: the causal diagonal aligned to the end.
    visible = torch.arange(m + t)[None, :] <= torch.arange(t)[:, None] + m
    y = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1) @ v
    x = x + attn.proj(y.transpose(1, 2).reshape(b, t, c))
    h = F.layer_norm(x, (c,), block.norm2.weight, block.norm2.bias, block.norm2.eps)
    return x + block.mlp.proj(F.gelu(block.mlp.fc(h), approximate="tanh"))


def reference_segments(model, ids, memory_length):
    """Logits (B, S * SEGMENT, V) of Transformer-XL on the consecutive segments of ``ids``, written out."""
    opts = model.opts
    pasts, logits = [None] * opts.n_layer, []
    for start in range(0, ids.shape[1], SEGMENT):
        x = model.tok_emb.weight[ids[:, start:start + SEGMENT]]
        for i, block in enumerate(model.blocks):
            y = reference_block(block, x, pasts[i], opts.n_head, opts.n_kv_head)
            held = x if pasts[i] is None else torch.cat((pasts[i], x), dim=1)
            pasts[i] = held[:, -memory_length:].detach()
            x = y
        x = F.layer_norm(x, (opts.d_model,), model.norm.weight, model.norm.bias, model.norm.eps)
        logits.append(x @ model.tok_emb.weight.T)
    return torch.cat(logits, dim=1)


def run_segments(model, ids, memory=None):
    memory = model.new_segment_memory() if memory is None else memory
    return torch.cat([model(ids[:, s:s + SEGMENT], segment_memory=memory) for s in range(0, ids.shape[1], SEGMENT)],
                     dim=1)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("memory_length", [3, 8])
def test_logits_of_consecutive_segments_equal_the_written_out_transformer_xl_reference(kernel, memory_length):
    # 3 segments of 5: memory 3 holds part of one segment, memory 8 a segment and a part of the one before.
    model = tiny_xl(KERNELS[kernel](), memory_length)
    ids = stream()
    with torch.no_grad():
        expected = reference_segments(model, ids, memory_length)
        got = run_segments(model, ids)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("norm_position", ["pre", "post"])
def test_with_the_whole_past_in_memory_the_second_segment_logits_equal_the_forward_over_both_segments(norm_position):
    # The first segment's hidden states do not depend on the second's (causal), so a memory holding all of them
    # gives each block of the second segment the keys of the full pass: the positions must line up for equality.
    model = tiny_xl(sdpa_attention, SEGMENT, norm_position=norm_position)
    full_model = Transformer(model.opts.model_copy(update={"memory_length": 0}), sdpa_attention, VOCAB, 2 * SEGMENT)
    full_model.load_state_dict(model.state_dict())
    ids = stream(segments=2)
    with torch.no_grad():
        torch.testing.assert_close(run_segments(model, ids), full_model.eval()(ids), rtol=0, atol=1e-5)


def test_the_memory_is_detached_so_gradients_do_not_depend_on_whether_past_segments_kept_their_graph():
    model = tiny_xl(naive_attention, 8).train()
    ids = stream(segments=2)
    grads = []
    for past_with_graph in (True, False):
        model.zero_grad()
        memory = model.new_segment_memory()
        with torch.set_grad_enabled(past_with_graph):
            model(ids[:, :SEGMENT], segment_memory=memory)
        assert not any(state.requires_grad for state in memory.states)
        model(ids[:, SEGMENT:], segment_memory=memory).square().mean().backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grad, grads[1][name], rtol=0, atol=0, msg=name)


def test_the_memory_keeps_the_last_memory_length_inputs_of_every_block():
    model = tiny_xl(sdpa_attention, 7)
    memory = model.new_segment_memory()
    with torch.no_grad():
        run_segments(model, stream(segments=2), memory)
    assert memory.length == 7 and [tuple(s.shape) for s in memory.states] == [(2, 7, 32)] * 2


def test_an_all_ones_attention_mask_gives_the_logits_of_no_mask():
    model = tiny_xl(sdpa_attention, 4)
    ids = stream(segments=2)
    with torch.no_grad():
        memory = model.new_segment_memory()
        masked = torch.cat([model(ids[:, s:s + SEGMENT], torch.ones(2, SEGMENT), segment_memory=memory)
                            for s in (0, SEGMENT)], dim=1)
        torch.testing.assert_close(masked, run_segments(model, ids), rtol=0, atol=0)


@pytest.mark.parametrize("options", [{"positions": "learned"}, {"positions": "sinusoidal"},
                                     {"causal": False}])
def test_memory_length_without_a_causal_rope_decoder_is_refused_naming_the_option(options):
    with pytest.raises(ValueError, match="memory_length"):
        TransformerOptions(**{"positions": "rope", "memory_length": 4, **options})


def test_a_run_config_with_memory_length_and_learned_positions_is_a_config_error_that_says_to_use_rope():
    with pytest.raises(ConfigError, match=r"model: .*memory_length \(4\).*positions: rope"):
        validate(merge(default_recipe(), {"model": {"positions": "learned", "memory_length": 4}}), Catalog.load())


def test_the_encoder_decoder_fixes_memory_length_at_zero():
    with pytest.raises(ValueError, match="memory_length"):
        EncoderDecoderOptions(positions="rope", memory_length=4)


def test_a_segment_memory_of_a_model_without_memory_length_is_refused():
    with pytest.raises(ConfigError, match="memory_length"):
        tiny_xl(sdpa_attention, 0).new_segment_memory()


@pytest.mark.parametrize("second_call, message", [
    (lambda model, ids, memory: model(ids[:1], segment_memory=memory), "row"),
    (lambda model, ids, memory: model(ids, torch.tensor([[0] + [1] * 4] * 2), segment_memory=memory), "padding"),
    (lambda model, ids, memory: model(ids, cache=model.new_cache(), segment_memory=memory), "KV cache"),
])
def test_calls_the_memory_cannot_continue_are_refused(second_call, message):
    model = tiny_xl(sdpa_attention, 4)
    ids = stream(segments=1)
    memory = model.new_segment_memory()
    with torch.no_grad():
        model(ids, segment_memory=memory)
        with pytest.raises(ConfigError, match=message):
            second_call(model, ids, memory)


def packed(rows=7, block=6):
    return torch.arange(rows * block).view(rows, block)


def test_segment_streams_give_row_i_of_batch_n_segment_n_of_contiguous_stream_i_and_start_over():
    # 42 tokens in 2 streams of 4-token segments: 5 segments (20 tokens) each, the last 2 tokens left out.
    streams = SegmentStreams(packed(), streams=2, segment_length=4)
    assert streams.num_segments == 5 and streams.starts_over
    batches = [streams.next_batch(2)["input_ids"] for _ in range(5)]
    assert torch.equal(torch.cat(batches, dim=1), torch.arange(40).view(2, 20))
    assert streams.starts_over and streams.epoch == 1
    assert torch.equal(streams.next_batch(2)["input_ids"], batches[0])


def test_segment_streams_resumed_from_their_state_give_the_batches_of_the_uninterrupted_order():
    streams = SegmentStreams(packed(), streams=3)
    for _ in range(3):
        streams.next_batch(3)
    resumed = SegmentStreams(packed(), streams=3)
    resumed.load_state_dict(streams.state_dict())
    for _ in range(4):  # across the epoch boundary (2 segments per stream)
        assert torch.equal(resumed.next_batch(3)["input_ids"], streams.next_batch(3)["input_ids"])


@pytest.mark.parametrize("make, message", [
    (lambda: SegmentStreams(packed(), streams=2).next_batch(3), "2 rows"),
    (lambda: SegmentStreams(packed(1, 6), streams=2), "fewer streams"),
    (lambda: SegmentStreams(packed(), streams=2).load_state_dict(SegmentStreams(packed(), 3).state_dict()),
     "cut as"),
])
def test_segment_streams_refuse_batches_data_and_states_they_cannot_continue(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_a_loop_over_segment_streams_with_a_segment_memory_computes_the_reference_logits_of_each_stream():
    model = tiny_xl(sdpa_attention, 8)
    tokens = torch.randint(0, VOCAB, (6, 6), generator=torch.Generator().manual_seed(3))
    streams = SegmentStreams(tokens, streams=2, segment_length=SEGMENT)
    logits = []
    with torch.no_grad():
        for _ in range(streams.num_segments):
            if streams.starts_over:
                memory = model.new_segment_memory()
            logits.append(model(streams.next_batch(2)["input_ids"], segment_memory=memory))
        expected = reference_segments(model, streams.segments, 8)
    torch.testing.assert_close(torch.cat(logits, dim=1), expected, rtol=0, atol=1e-5)
