"""The transformer's modern decoder options (RoPE, RMSNorm, SwiGLU / ReLU^2, grouped-query attention, QK-norm, logit
soft-capping, untied head), each against a written-out reference; the defaults unchanged."""

import math

import pytest
import torch
import torch.nn.functional as F
from hookformer.plugins.attention.naive import naive_attention
from hookformer.plugins.attention.sdpa import sdpa_attention
from hookformer.plugins.attention.triton_flash import TritonFlashAttention, TritonFlashOptions
from hookformer.plugins.models.transformer import Rotary, Transformer, TransformerOptions


def tiny_model(attention=sdpa_attention, seed=0, **overrides):
    torch.manual_seed(seed)
    options = {"n_layer": 2, "n_head": 4, "d_model": 32, **overrides}
    return Transformer(TransformerOptions(**options), attention, vocab_size=50, max_seq_len=16)


def rms(x, weight, eps=1e-5):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rotate_as_complex(x, base):
    """(B, H, T, D): pair i of position t times exp(1j * t * base^(-2i/D))."""
    d = x.shape[-1]
    angles = torch.arange(x.shape[-2], dtype=torch.float64)[:, None] * base ** (-torch.arange(0, d, 2) / d)
    pairs = torch.view_as_complex(x.double().reshape(*x.shape[:-1], d // 2, 2).contiguous())
    return torch.view_as_real(pairs * torch.polar(torch.ones_like(angles), angles)).flatten(-2).to(x.dtype)


def test_default_options_keep_the_gpt2_parameter_names_shapes_and_logits():
    # Names, shapes and logits of the model before these options existed (same seed, same inputs).
    torch.manual_seed(0)
    model = Transformer(TransformerOptions(n_layer=1, n_head=2, d_model=16), sdpa_attention, vocab_size=11,
                        max_seq_len=8)
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == [
        ("tok_emb.weight", (11, 16)), ("pos_emb.weight", (8, 16)), ("blocks.0.norm1.weight", (16,)),
        ("blocks.0.norm1.bias", (16,)), ("blocks.0.attn.qkv.weight", (48, 16)), ("blocks.0.attn.qkv.bias", (48,)),
        ("blocks.0.attn.proj.weight", (16, 16)), ("blocks.0.attn.proj.bias", (16,)),
        ("blocks.0.norm2.weight", (16,)), ("blocks.0.norm2.bias", (16,)), ("blocks.0.mlp.fc.weight", (64, 16)),
        ("blocks.0.mlp.fc.bias", (64,)), ("blocks.0.mlp.proj.weight", (16, 64)), ("blocks.0.mlp.proj.bias", (16,)),
        ("norm.weight", (16,)), ("norm.bias", (16,)), ("lm_head.weight", (11, 16))]
    torch.manual_seed(0)
    model = Transformer(TransformerOptions(n_layer=2, n_head=2, d_model=16), sdpa_attention, vocab_size=11,
                        max_seq_len=8)
    logits = model(torch.arange(12).remainder(11).view(2, 6))
    expected = torch.tensor([[0.30396900, -0.05885150, -0.02915115, 0.17117484],
                             [-0.24761057, 0.16797712, 0.09535455, -0.16669951],
                             [0.09443086, 0.02689214, 0.24224955, -0.03472644]])
    torch.testing.assert_close(logits[0, :3, :4], expected, rtol=0, atol=1e-7)


def test_rope_turns_each_pair_of_a_head_like_a_complex_number_of_its_position():
    x = torch.randn(2, 3, 7, 8)
    torch.testing.assert_close(Rotary(8, 500.0)(x), rotate_as_complex(x, 500.0))


def test_rope_model_has_no_position_parameters_and_its_scores_depend_on_offsets_only():
    model = tiny_model(positions="rope", n_layer=1).eval()
    assert not any("pos" in name for name in model.state_dict())
    rotary = model.blocks[0].attn.rotary
    q, k = torch.randn(8), torch.randn(8)
    # The same q and k at positions (5, 2) and (9, 6): the same score; at (5, 3), another.
    q_at, k_at = rotary(q.expand(1, 1, 10, 8))[0, 0], rotary(k.expand(1, 1, 10, 8))[0, 0]
    torch.testing.assert_close(q_at[5] @ k_at[2], q_at[9] @ k_at[6])
    assert not torch.allclose(q_at[5] @ k_at[2], q_at[5] @ k_at[3])


def reference_attention(attn, x, causal=True):
    """The attention sub-layer written out head by head: query head h reads key/value head h // (H / H_kv)."""
    h, h_kv, d = attn.n_head, attn.kv_heads, attn.head_dim
    qkv = F.linear(x, attn.qkv.weight, attn.qkv.bias)
    q = qkv[..., : h * d].unflatten(-1, (h, d)).transpose(1, 2)
    k = qkv[..., h * d: (h + h_kv) * d].unflatten(-1, (h_kv, d)).transpose(1, 2)
    v = qkv[..., (h + h_kv) * d:].unflatten(-1, (h_kv, d)).transpose(1, 2)
    if attn.qk_norm:
        q, k = rms(q, attn.q_norm.weight), rms(k, attn.k_norm.weight)
    if attn.rotary is not None:
        q, k = rotate_as_complex(q, 10000.0), rotate_as_complex(k, 10000.0)
    t = x.shape[1]
    outputs = []
    for head in range(h):
        group = head // (h // h_kv)
        scores = q[:, head] @ k[:, group].transpose(-1, -2) / math.sqrt(d)
        if causal:
            scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
        outputs.append(scores.softmax(-1) @ v[:, group])
    return F.linear(torch.cat(outputs, dim=-1), attn.proj.weight, attn.proj.bias)


@pytest.mark.parametrize("options", [{"positions": "rope"}, {"n_kv_head": 1}, {"n_kv_head": 2},
                                     {"n_kv_head": 2, "positions": "rope", "qk_norm": True}])
def test_attention_with_rope_gqa_and_qk_norm_equals_the_head_by_head_reference(options):
    model = tiny_model(n_layer=1, **options)
    attn = model.blocks[0].attn
    if attn.qk_norm:  # not the ones they start at, so that the weights are seen to apply
        torch.nn.init.normal_(attn.q_norm.weight), torch.nn.init.normal_(attn.k_norm.weight)
    x = torch.randn(2, 6, 32)
    torch.testing.assert_close(attn(x), reference_attention(attn, x), rtol=1e-5, atol=1e-6)


def test_grouped_query_attention_projects_fewer_key_value_heads():
    attn = tiny_model(n_kv_head=2).blocks[0].attn
    assert attn.qkv.weight.shape == (32 + 2 * 2 * 8, 32)


def test_rmsnorm_option_normalizes_by_the_root_mean_square_with_a_weight_and_no_bias():
    model = tiny_model(norm="rmsnorm")
    norm = model.blocks[1].norm2
    torch.nn.init.normal_(norm.weight)
    assert not any(name.endswith("norm.bias") or "norm1.bias" in name or "norm2.bias" in name
                   for name in model.state_dict())
    x = torch.randn(3, 32) * 4 + 1
    torch.testing.assert_close(norm(x), rms(x, norm.weight))


def test_swiglu_mlp_is_proj_of_silu_gate_times_fc_with_8_thirds_width_rounded_to_64():
    mlp = tiny_model(mlp="swiglu").blocks[0].mlp
    assert mlp.gate.weight.shape == mlp.fc.weight.shape == (128, 32)  # 8/3 * 32 = 85.3 -> 128
    x = torch.randn(5, 32)
    gate, fc = F.linear(x, mlp.gate.weight, mlp.gate.bias), F.linear(x, mlp.fc.weight, mlp.fc.bias)
    torch.testing.assert_close(mlp(x), F.linear(F.silu(gate) * fc, mlp.proj.weight, mlp.proj.bias))
    assert tiny_model(mlp="swiglu", d_ff=48).blocks[0].mlp.gate.weight.shape == (48, 32)


def test_relu2_mlp_is_proj_of_squared_relu_of_fc():
    mlp = tiny_model(mlp="relu2").blocks[0].mlp
    x = torch.randn(5, 32)
    hidden = F.relu(F.linear(x, mlp.fc.weight, mlp.fc.bias)) ** 2
    torch.testing.assert_close(mlp(x), F.linear(hidden, mlp.proj.weight, mlp.proj.bias))


def test_logit_softcap_gives_cap_times_tanh_of_the_raw_logits_on_every_lm_output():
    model = tiny_model(logit_softcap=0.05).eval()
    ids = torch.randint(0, 50, (2, 8))
    raw = model.lm_head(model.hidden_states(ids))
    expected = 0.05 * torch.tanh(raw / 0.05)
    torch.testing.assert_close(model(ids), expected)
    torch.testing.assert_close(model(ids, heads=["lm"])["lm"], expected)
    assert model(ids).abs().max() <= 0.05 < raw.abs().max()  # tanh may round to 1 in float32


def test_untied_embeddings_give_the_head_its_own_weight():
    model = tiny_model(tie_embeddings=False)
    assert model.lm_head.weight is not model.tok_emb.weight
    assert "lm_head.weight" in dict(model.named_parameters())


def test_unpadded_path_gives_the_padded_models_hidden_states_with_rope_and_gqa():
    ids = torch.randint(0, 50, (2, 8))
    mask = torch.tensor([[1] * 8, [0, 0, 0] + [1] * 5])
    options = {"positions": "rope", "n_kv_head": 2, "qk_norm": True, "norm": "rmsnorm", "mlp": "swiglu"}
    unpadded = tiny_model(**options).eval().hidden_states(ids, mask)
    padded = tiny_model(unpad=False, **options).eval().hidden_states(ids, mask)
    torch.testing.assert_close(unpadded[mask.bool()], padded[mask.bool()], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel", [sdpa_attention, TritonFlashAttention(TritonFlashOptions())],
                         ids=["sdpa", "triton_flash"])
def test_kernels_give_the_naive_kernels_logits_and_gradients_for_a_gqa_rope_model(kernel):
    ids = torch.randint(0, 50, (2, 8))
    mask = torch.tensor([[1] * 8, [0, 0] + [1] * 6])
    options = {"positions": "rope", "n_kv_head": 2, "qk_norm": True, "n_layer": 1}
    results = []
    for attention in (naive_attention, kernel):
        model = tiny_model(attention, **options)
        logits = model(ids, mask)
        logits[mask.bool()].square().sum().backward()
        results.append((logits[mask.bool()], {n: p.grad for n, p in model.named_parameters()}))
    (expected, expected_grads), (logits, grads) = results
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("options, field", [({"n_kv_head": 3}, "n_kv_head"),
                                            ({"positions": "rope", "d_model": 36, "n_head": 4}, "head dimension")])
def test_options_that_do_not_fit_the_heads_are_refused_naming_the_field(options, field):
    with pytest.raises(ValueError, match=field):
        TransformerOptions(**{"n_head": 4, "d_model": 32, **options})
