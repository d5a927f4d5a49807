"""The encoder-decoder model: cross-attention against its written-out formula, every built-in kernel serving it
(values and gradients), cached decoding equal to the uncached forward pass, the original-Transformer and T5-style
options, learning to reverse a sequence, the engine's checkpoints, and the refusals that name the fix."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hookformer.core import checkpoint
from hookformer.core.capabilities import AttentionCapabilities, CheckedKernel
from hookformer.core.errors import ConfigError, HookformerError
from hookformer.core.parts import BuildContext, Shapes, is_decoder
from hookformer.plugins.attention.naive import naive_attention
from hookformer.plugins.attention.sdpa import sdpa_attention
from hookformer.plugins.attention.triton_flash import TritonFlashAttention, TritonFlashOptions
from hookformer.plugins.models.encoder_decoder import EncoderDecoder, EncoderDecoderOptions
from hookformer.plugins.models.transformer import Transformer, TransformerOptions
from hookformer.registry.catalog import Catalog

VOCAB, MAX_LEN = 23, 12
KERNELS = {"naive": lambda: naive_attention, "sdpa": lambda: sdpa_attention,
           "triton_flash": lambda: TritonFlashAttention(TritonFlashOptions())}


def tiny(attention=naive_attention, seed=0, **overrides):
    torch.manual_seed(seed)
    # head dim 16: triton_flash's smallest.
    options = {"n_layer": 2, "n_encoder_layer": 1, "n_head": 2, "d_model": 32, **overrides}
    return EncoderDecoder(EncoderDecoderOptions(**options), attention, VOCAB, MAX_LEN)


def pair(b=3, s=7, t=5, seed=1):
    """Sources right-padded to different lengths, targets starting with bos (1) and right-padded."""
    g = torch.Generator().manual_seed(seed)
    src, tgt = torch.randint(2, VOCAB, (b, s), generator=g), torch.randint(2, VOCAB, (b, t), generator=g)
    tgt[:, 0] = 1
    src_mask = (torch.arange(s) < torch.tensor([s, s - 3, 2])[:b, None]).long()
    tgt_mask = (torch.arange(t) < torch.tensor([t, t - 2, t])[:b, None]).long()
    return src * src_mask, src_mask, tgt * tgt_mask, tgt_mask


def test_cross_attention_is_softmax_of_scaled_scores_with_the_source_padding_mask_times_values():
    attn = tiny().blocks[0].cross_attn
    x, memory = torch.randn(2, 4, 32), torch.randn(2, 6, 32)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]]).bool()
    q = F.linear(x, attn.q.weight, attn.q.bias).view(2, 4, 2, 16).transpose(1, 2)
    k, v = F.linear(memory, attn.kv.weight, attn.kv.bias).view(2, 6, 4, 16).transpose(1, 2).split(2, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(16) + torch.where(mask, 0.0, -math.inf)[:, None, None, :]
    heads = torch.softmax(scores, dim=-1) @ v
    expected = F.linear(heads.transpose(1, 2).reshape(2, 4, 32), attn.proj.weight, attn.proj.bias)
    torch.testing.assert_close(attn(x, memory, mask), expected, rtol=0, atol=1e-6)


def test_naive_sdpa_and_triton_flash_agree_on_cross_attention_with_source_padding_in_values_and_gradients():
    src, src_mask, tgt, tgt_mask = pair()
    results = {}
    for name, kernel in KERNELS.items():
        model = tiny(kernel(), n_layer=1)
        logits = model(src, src_mask, decoder_input_ids=tgt, decoder_attention_mask=tgt_mask)
        logits[tgt_mask.bool()].square().sum().backward()
        results[name] = (logits.detach(), {n: p.grad for n, p in model.named_parameters()})
    reference, reference_grads = results.pop("naive")
    assert reference_grads["encoder.blocks.0.attn.qkv.weight"].abs().sum() > 0  # the source reaches the loss
    for logits, grads in results.values():
        torch.testing.assert_close(logits[tgt_mask.bool()], reference[tgt_mask.bool()], rtol=1e-4, atol=1e-5)
        for n, grad in grads.items():
            torch.testing.assert_close(grad, reference_grads[n], rtol=1e-4, atol=1e-5, msg=n)


def test_a_kernel_without_unequal_lengths_is_refused_for_cross_attention_by_its_capabilities():
    kernel = CheckedKernel("equal_only", naive_attention, AttentionCapabilities(unequal_lengths=False))
    src, src_mask, tgt, tgt_mask = pair()
    with pytest.raises(HookformerError, match="T_q != T_k.*cross-attention.*declares unequal_lengths"):
        tiny(kernel)(src, src_mask, decoder_input_ids=tgt, decoder_attention_mask=tgt_mask)


@pytest.mark.parametrize("kernel", ["naive", "sdpa"])  # triton_flash's cached calls: tests/test_kv_cache.py
def test_cached_decoding_with_a_reorder_equals_the_uncached_forward_pass(kernel):
    model = tiny(KERNELS[kernel](), positions="rope", n_kv_head=1, qk_norm=True).eval()
    src, src_mask, tgt, _ = pair()
    with torch.no_grad():
        full = model(src, src_mask, decoder_input_ids=tgt)
        cache = model.new_cache()
        memory = model.encode(src, src_mask)
        steps = [model(attention_mask=src_mask, decoder_input_ids=tgt[:, :2], cache=cache, encoder_hidden=memory)]
        index = torch.tensor([2, 0, 0])  # beam search: the cross-attention keys and source mask follow the rows
        cache.reorder(index)
        for t in range(2, tgt.shape[1]):  # later calls read the source from the cache
            steps.append(model(decoder_input_ids=tgt[index, t:t + 1], cache=cache))
    torch.testing.assert_close(steps[0], full[:, :2], rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.cat(steps[1:], dim=1), full[index, 2:], rtol=0, atol=1e-5)


def test_post_norm_sinusoidal_shared_embeddings_build_and_share_one_table_three_ways():
    model = tiny(norm_position="post", positions="sinusoidal", dropout=0.1)
    assert model.encoder.tok_emb is model.tok_emb and model.lm_head.weight is model.tok_emb.weight
    assert isinstance(model.norm, torch.nn.Identity) and isinstance(model.encoder.norm, torch.nn.Identity)
    assert not any("pos_emb" in name for name, _ in model.named_parameters())
    src, src_mask, tgt, tgt_mask = pair()
    model(src, src_mask, decoder_input_ids=tgt, decoder_attention_mask=tgt_mask).sum().backward()
    assert model.tok_emb.weight.grad.abs().sum() > 0


def test_rmsnorm_rope_no_bias_build_without_biases_and_unshared_embeddings_are_separate():
    model = tiny(norm="rmsnorm", positions="rope", bias=False, mlp="swiglu", share_embeddings=False,
                 tie_embeddings=False)
    names = [name for name, _ in model.named_parameters()]
    assert not [n for n in names if n.endswith("bias")] and "encoder.tok_emb.weight" in names
    assert model.encoder.tok_emb is not model.tok_emb and model.lm_head.weight is not model.tok_emb.weight
    src, src_mask, tgt, tgt_mask = pair()
    out = model(src, src_mask, decoder_input_ids=tgt, decoder_attention_mask=tgt_mask,
                heads=["lm", "hidden", "encoder_hidden"])
    assert out["lm"].shape == (3, 5, VOCAB) and out["hidden"].shape == (3, 5, 32)
    assert out["encoder_hidden"].shape == (3, 7, 32) and torch.isfinite(out["lm"]).all()


class RealTokens(torch.nn.Module):
    """A task head: the hidden states of the real tokens (the mask it is given zeroes the rest)."""

    def forward(self, hidden, attention_mask):
        return hidden * attention_mask[..., None]


def test_the_model_declares_itself_a_decoder_with_an_encoder_and_takes_task_heads_on_decoder_states():
    model = tiny()
    assert model.encoder_decoder and is_decoder(model) and not Transformer.encoder_decoder
    assert (model.d_model, model.vocab_size, model.max_seq_len) == (32, VOCAB, MAX_LEN)
    model.add_head("real_tokens", RealTokens())
    with pytest.raises(ValueError, match="encoder_hidden"):
        model.add_head("encoder_hidden", RealTokens())
    src, src_mask, tgt, tgt_mask = pair()
    out = model(src, src_mask, decoder_input_ids=tgt, decoder_attention_mask=tgt_mask, heads=["real_tokens", "hidden"])
    torch.testing.assert_close(out["real_tokens"], out["hidden"] * tgt_mask[..., None])


def test_seq2seq_inputs_are_refused_by_a_one_sequence_model_and_missing_targets_by_the_encoder_decoder():
    torch.manual_seed(0)
    decoder = Transformer(TransformerOptions(n_layer=1, n_head=2, d_model=32), naive_attention, VOCAB, MAX_LEN)
    src, src_mask, tgt, tgt_mask = pair()
    with pytest.raises(ConfigError, match="model.name: encoder_decoder"):
        decoder(src, src_mask, decoder_input_ids=tgt, decoder_attention_mask=tgt_mask)
    with pytest.raises(ConfigError, match="needs decoder_input_ids"):
        tiny()(src, src_mask)
    with pytest.raises(ConfigError, match="no token_type_ids or document_ids"):
        tiny()(src, src_mask, decoder_input_ids=tgt, document_ids=torch.zeros_like(src))
    with pytest.raises(ValueError, match="causal"):
        EncoderDecoderOptions(causal=False)


def test_checkpoint_save_and_load_through_the_engine_round_trips_a_registered_encoder_decoder(tmp_path: Path):
    entry = Catalog.load().get("model", "encoder_decoder")
    options = entry.options_model()(n_layer=1, n_head=2, d_model=32, positions="rope", norm="rmsnorm")
    ctx = BuildContext(run_dir=tmp_path, attention=naive_attention, shapes=Shapes(vocab_size=VOCAB, max_seq_len=9))
    torch.manual_seed(0)
    saved = entry.build(options, ctx)
    path = checkpoint.save(tmp_path, 3, saved, {"step": 3}, keep=2)
    torch.manual_seed(1)
    loaded = entry.build(options, ctx)
    assert checkpoint.load(path, loaded)["step"] == 3
    src, src_mask, tgt, _ = pair()
    torch.testing.assert_close(loaded(src, src_mask, decoder_input_ids=tgt),
                               saved(src, src_mask, decoder_input_ids=tgt), rtol=0, atol=0)
    assert loaded.encoder.tok_emb.weight is loaded.tok_emb.weight  # still shared after loading


def greedy(model, src, length):
    """Greedy decoding with the cache: bos, then ``length`` tokens."""
    cache, out = model.new_cache(), torch.ones(src.shape[0], 1, dtype=torch.long)
    ids = out
    for _ in range(length):
        ids = model(src, decoder_input_ids=ids, cache=cache)[:, -1:].argmax(-1)
        out = torch.cat([out, ids], dim=1)
    return out[:, 1:]


@pytest.fixture
def one_thread():
    """Tiny matrices: one thread is faster than several that contend for a shared machine's cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow  # 200 training steps: about 3 s of CPU
def test_a_tiny_encoder_decoder_learns_to_reverse_a_sequence(one_thread):
    torch.manual_seed(0)
    model = EncoderDecoder(EncoderDecoderOptions(n_layer=2, n_head=2, d_model=32, d_ff=64), sdpa_attention,
                           vocab_size=12, max_seq_len=8)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        src = torch.randint(2, 12, (64, 5), generator=g)
        tgt = torch.cat([torch.ones(64, 1, dtype=torch.long), src.flip(1)], dim=1)
        logits = model(src, decoder_input_ids=tgt[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    src = torch.randint(2, 12, (100, 5), generator=g)
    with torch.no_grad():
        accuracy = (greedy(model.eval(), src, 5) == src.flip(1)).all(1).float().mean()
    assert accuracy >= 0.9, (float(loss), float(accuracy))


def bart_weights(hf) -> dict:
    """HF BART's tensors under this model's names (its positions table has 2 extra leading rows: offset 2)."""
    state, ours = hf.model.state_dict(), {}

    def cat(prefix, *names):
        return {kind: torch.cat([state[f"{prefix}.{n}.{kind}"] for n in names]) for kind in ("weight", "bias")}

    def linear(to, tensors):
        ours.update({f"{to}.{kind}": tensor for kind, tensor in tensors.items()})

    for stack, to in (("encoder", "encoder."), ("decoder", "")):
        ours[f"{to}pos_emb.weight"] = state[f"{stack}.embed_positions.weight"][2:]
        linear(f"{to}emb_norm", cat(stack, "layernorm_embedding"))
        for i in range(len(getattr(hf.model, stack).layers)):
            layer, block = f"{stack}.layers.{i}", f"{to}blocks.{i}"
            linear(f"{block}.attn.qkv", cat(f"{layer}.self_attn", "q_proj", "k_proj", "v_proj"))
            for ours_name, theirs in (("attn.proj", "self_attn.out_proj"), ("norm1", "self_attn_layer_norm"),
                                      ("mlp.fc", "fc1"), ("mlp.proj", "fc2"), ("norm2", "final_layer_norm"),
                                      ("cross_attn.q", "encoder_attn.q_proj"), ("cross_attn.proj",
                                      "encoder_attn.out_proj"), ("cross_norm", "encoder_attn_layer_norm")):
                if f"{layer}.{theirs}.weight" in state:
                    linear(f"{block}.{ours_name}", cat(layer, theirs))
            if stack == "decoder":
                linear(f"{block}.cross_attn.kv", cat(f"{layer}.encoder_attn", "k_proj", "v_proj"))
    ours["tok_emb.weight"] = state["shared.weight"]
    return ours


def test_post_norm_learned_positions_and_shared_embeddings_compute_what_hf_bart_computes_with_its_weights():
    from transformers import BartConfig, BartForConditionalGeneration

    config = BartConfig(vocab_size=VOCAB, d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=MAX_LEN,
                        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, activation_function="gelu",
                        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
                        scale_embedding=False, tie_word_embeddings=True)
    torch.manual_seed(0)
    hf = BartForConditionalGeneration(config).eval()
    model = tiny(norm_position="post", embedding_norm=True, mlp="gelu_exact", d_ff=64).eval()
    weights = bart_weights(hf)
    assert set(weights) | {"encoder.tok_emb.weight", "lm_head.weight"} == set(model.state_dict())
    model.load_state_dict(weights, strict=False)
    src, src_mask, tgt, tgt_mask = pair()
    with torch.no_grad():
        theirs = hf(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt,
                    decoder_attention_mask=tgt_mask).logits
        ours = model(src, src_mask, decoder_input_ids=tgt, decoder_attention_mask=tgt_mask)
    torch.testing.assert_close(ours[tgt_mask.bool()], theirs[tgt_mask.bool()], rtol=1e-4, atol=1e-5)
