"""The Transformer, the causal LM objective and exact gradient accumulation."""

import pytest
import torch
from hookformer.core.loop import accumulate_gradients
from hookformer.core.objective import compute
from hookformer.core.params import param_groups, with_weight_decay
from hookformer.core.parts import BuildContext, Shapes
from hookformer.plugins.attention.naive import naive_attention
from hookformer.plugins.attention.sdpa import sdpa_attention
from hookformer.plugins.models.transformer import Transformer, TransformerOptions
from hookformer.plugins.objectives.clm import CausalLM, CLMOptions


def tiny_model(attention=sdpa_attention, seed=0, **overrides):
    torch.manual_seed(seed)
    opts = TransformerOptions(n_layer=2, n_head=2, d_model=32, **overrides)
    return Transformer(opts, attention, vocab_size=50, max_seq_len=16)


def test_decoder_logits_at_a_position_do_not_depend_on_later_tokens():
    model = tiny_model().eval()
    ids = torch.randint(0, 50, (2, 12))
    changed = ids.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 50
    torch.testing.assert_close(model(ids)[:, :8], model(changed)[:, :8])


def test_encoder_switch_makes_every_position_see_the_whole_sequence():
    model = tiny_model(causal=False).eval()
    ids = torch.randint(0, 50, (1, 12))
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % 50
    assert not torch.allclose(model(ids)[:, 0], model(changed)[:, 0])


def test_output_projection_is_tied_to_the_token_embedding_and_saved_once():
    model = tiny_model()
    assert model.lm_head.weight is model.tok_emb.weight
    assert len({id(p) for p in model.parameters()}) == len(list(model.parameters()))


@pytest.mark.parametrize("positions", ["learned", "sinusoidal"])
def test_naive_and_sdpa_models_give_the_same_logits(positions):
    ids = torch.randint(0, 50, (2, 16))
    a = tiny_model(naive_attention, positions=positions).eval()(ids)
    b = tiny_model(sdpa_attention, positions=positions).eval()(ids)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def padded_batch(seed=0):
    """Ids, token types and a mask with right padding, left padding and one full row."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 50, (4, 16), generator=generator)
    types = torch.randint(0, 2, (4, 16), generator=generator)
    mask = torch.ones(4, 16, dtype=torch.bool)
    mask[0, 9:] = False
    mask[1, 3:] = False
    mask[2, :5] = False
    return ids, types, mask


@pytest.mark.parametrize("attention", [naive_attention, sdpa_attention], ids=["naive", "sdpa"])
@pytest.mark.parametrize("causal,positions", [(False, "learned"), (True, "sinusoidal")])
def test_unpadded_model_gives_the_padded_models_hidden_states_on_real_tokens_and_zeros_on_padding(
        attention, causal, positions):
    ids, types, mask = padded_batch()
    unpadded = tiny_model(attention, causal=causal, positions=positions, type_vocab_size=2).eval()
    padded = tiny_model(attention, causal=causal, positions=positions, type_vocab_size=2, unpad=False).eval()
    hidden = unpadded(ids, mask, token_type_ids=types, heads=["hidden"])["hidden"]
    reference = padded(ids, mask, token_type_ids=types, heads=["hidden"])["hidden"]
    torch.testing.assert_close(hidden[mask], reference[mask], rtol=1e-5, atol=1e-6)
    assert torch.count_nonzero(hidden[~mask]) == 0
    assert torch.count_nonzero(reference[~mask]) > 0  # the padded model does compute padding positions


def test_unpadded_model_gives_the_padded_models_gradients():
    ids, types, mask = padded_batch()
    weights = torch.randn(4, 16, 32, generator=torch.Generator().manual_seed(1))
    grads = []
    for unpad in (True, False):
        model = tiny_model(causal=False, type_vocab_size=2, pooler=True, unpad=unpad).eval()
        out = model(ids, mask, token_type_ids=types, heads=["hidden", "pooled"])
        # Only real tokens feed the loss, as in every objective; row 2's first token is padding, so no pooled loss.
        loss = (out["hidden"][mask] * weights[mask]).sum() + out["pooled"][[0, 1, 3]].sum()
        loss.backward()
        grads.append({name: p.grad for name, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6, msg=name)


def test_a_batch_without_padding_takes_the_ordinary_path_bit_for_bit():
    ids, types, _ = padded_batch()
    full = torch.ones_like(ids, dtype=torch.bool)
    a = tiny_model(causal=False).eval()(ids, full)
    b = tiny_model(causal=False, unpad=False).eval()(ids, full)
    assert torch.equal(a, b)


def test_clm_loss_is_the_summed_next_token_cross_entropy_over_unpadded_targets():
    model = tiny_model().eval()
    ids = torch.randint(0, 50, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 6:] = False
    result = compute(CausalLM(CLMOptions(), vocab_size=50), model, {"input_ids": ids, "attention_mask": mask})
    assert result.num_items == 9 + 5
    logits = model(ids, mask)
    expected = sum(torch.nn.functional.cross_entropy(logits[i, : n], ids[i, 1: n + 1], reduction="sum")
                   for i, n in ((0, 9), (1, 5)))
    torch.testing.assert_close(result.loss_sum, expected)


def test_accumulating_4_micro_batches_of_2_equals_one_batch_of_8():
    ids = torch.randint(0, 50, (8, 16), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(8, 16, dtype=torch.bool)
    for row, length in enumerate([16, 3, 9, 16, 5, 12, 2, 7]):  # unequal item counts per micro-batch
        mask[row, length:] = False
    objective = CausalLM(CLMOptions(), vocab_size=50)

    def grads(split):
        model = tiny_model(dropout=0.0)
        batches = [{"input_ids": ids[i:i + split], "attention_mask": mask[i:i + split]} for i in range(0, 8, split)]
        loss_sum, items, tokens = accumulate_gradients(model, objective, batches)
        return loss_sum / items, {n: p.grad.clone() for n, p in model.named_parameters()}

    loss_big, grads_big = grads(8)
    loss_acc, grads_acc = grads(2)
    assert loss_acc == pytest.approx(loss_big, rel=1e-6)
    for name in grads_big:
        torch.testing.assert_close(grads_acc[name], grads_big[name], rtol=1e-5, atol=1e-7)


def test_engine_parameter_groups_decay_linear_weights_only():
    model = tiny_model()
    groups = with_weight_decay(param_groups(model), 0.1)
    decay, no_decay = (next(g for g in groups if g["decay"] is flag) for flag in (True, False))
    decayed = {id(p) for p in decay["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in decayed}
    assert names and all(n.endswith(("qkv.weight", "proj.weight", "fc.weight")) for n in names)
    assert id(model.tok_emb.weight) not in decayed and no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.1


def test_model_build_takes_vocabulary_and_length_from_the_negotiated_shapes():
    from hookformer.plugins.models.transformer import build

    model = build(TransformerOptions(n_layer=1, d_model=16, n_head=2), BuildContext(
        run_dir=".", shapes=Shapes(vocab_size=263, max_seq_len=24), attention=sdpa_attention))
    assert model.tok_emb.num_embeddings == model.vocab_size == 263 and model.max_seq_len == 24


def test_label_smoothing_shapes_the_training_loss_but_never_the_evaluation_loss():
    model = tiny_model()
    batch = {"input_ids": torch.randint(0, 50, (2, 10))}
    smoothed, plain = CausalLM(CLMOptions(label_smoothing=0.2), 50), CausalLM(CLMOptions(), 50)
    model.eval()
    assert torch.equal(compute(smoothed, model, batch).loss_sum, compute(plain, model, batch).loss_sum)
    model.train()  # no dropout in tiny_model: the same logits, a different target distribution
    assert compute(smoothed, model, batch).loss_sum > compute(plain, model, batch).loss_sum
