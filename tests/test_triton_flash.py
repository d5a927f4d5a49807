"""The Triton flash kernel's GPU paths, pinned where a CPU can check them: launch grids, memory safety of document
masks, the GPU tile configurations at head dims 64/96/128, the deterministic backward, strided inputs and fp32
without TF32. On a CPU the kernels run under TRITON_INTERPRET=1 (conftest); on a CUDA machine, compiled."""

import pytest
import torch

from hookformer.plugins.attention import TRITON_FLASH
from hookformer.plugins.attention import triton_flash as tf
from hookformer.plugins.attention.naive import naive_attention
from hookformer.testing import AttentionCase, check_attention_kernel

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
flash = tf.TritonFlashAttention(tf.TritonFlashOptions())


def _qkv(b, h, t_q, t_k, d, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, t, d, generator=g).to(DEVICE, dtype).requires_grad_() for t in (t_q, t_k, t_k)]


def _against_reference(q, k, v, dtype_tolerance, **kwargs):
    """Output and gradients of flash_attention against the fp64 reference."""
    out = tf.flash_attention(q, k, v, **kwargs)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(DEVICE, out.dtype)
    got = (out, *torch.autograd.grad(out, (q, k, v), grad))
    ref_inputs = [x.detach().double().requires_grad_() for x in (q, k, v)]
    reference_kwargs = {key: value for key, value in kwargs.items() if key != "configs"}
    ref = naive_attention(*ref_inputs, **reference_kwargs)
    want = (ref, *torch.autograd.grad(ref, ref_inputs, grad.double()))
    for name, actual, expected in zip(("output", "dq", "dk", "dv"), got, want):
        torch.testing.assert_close(actual.double(), expected, atol=dtype_tolerance.atol, rtol=dtype_tolerance.rtol,
                                   msg=lambda m, n=name: f"{n}: {m}")
    return got


def test_every_launch_grid_is_one_dimensional_so_batch_times_heads_past_65535_launches(monkeypatch):
    # CUDA caps grid axes 1 and 2 at 65,535 programs, axis 0 at 2^31 - 1. Launches are recorded, not run.
    grids = []

    def record(kernel, config, grid, *args, **meta):
        configs = [config.all_kwargs()] if config else [c.all_kwargs() for c in (
            tf.gpu_configs(tf.FWD_CONFIGS, 64) + tf.gpu_configs(tf.BWD_CONFIGS, 64) + [tf.INTERPRETER_CONFIG])]
        for c in configs:
            grids.append((kernel, grid({**meta, **c}) if callable(grid) else grid))

    monkeypatch.setattr(tf, "_launch", record)
    q = torch.zeros(4096, 16, 3, 64, requires_grad=True)  # b*h = 65,536
    tf.flash_attention(q, q, q, causal=True).sum().backward()
    assert {kernel for kernel, _ in grids} == {tf._fwd_kernel, tf._delta_kernel, tf._bwd_kernel, tf._dq_kernel}
    for kernel, grid in grids:
        assert len(grid) == 1 and 65_536 <= grid[0] < 2**31, (kernel, grid)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_document_ids_with_more_queries_than_keys_never_read_before_the_tensor(causal):
    # Query i is key i + T_k - T_q: with T_q > T_k the first queries come before the first key, see nothing (zeros),
    # and their document is never loaded. The ids sit in a larger buffer whose earlier elements hold a real document
    # id, so that reading before the tensor would change the output.
    t_q, t_k, d = 24, 16, 16
    q, k, v = _qkv(1, 2, t_q, t_k, d)
    buffer = torch.zeros(1, 8 + t_k, dtype=torch.int32, device=DEVICE)
    buffer[0, 8 + 10:] = 1
    document_ids = buffer[:, 8:]
    out = flash(q, k, v, causal=causal, document_ids=document_ids)
    early = t_q - t_k
    assert torch.equal(out[:, :, :early], torch.zeros_like(out[:, :, :early]))
    aligned = naive_attention(q[:, :, early:], k, v, causal=causal, document_ids=document_ids)
    torch.testing.assert_close(out[:, :, early:], aligned)


def _gpu_config_pairs():
    """Every GPU (forward, backward) configuration of each head dim, paired in list order."""
    for d in (64, 96, 128):
        block_d = 1 << (d - 1).bit_length()
        for fwd, bwd in zip(tf.gpu_configs(tf.FWD_CONFIGS, block_d), tf.gpu_configs(tf.BWD_CONFIGS, block_d),
                            strict=True):
            yield pytest.param(d, (fwd, bwd), id=f"D{d}-fwd{fwd.kwargs['BLOCK_M']}x{fwd.kwargs['BLOCK_N']}"
                                                   f"-bwd{bwd.kwargs['BLOCK_M']}x{bwd.kwargs['BLOCK_N']}")


@pytest.mark.parametrize("d,configs", _gpu_config_pairs())
def test_the_gpu_tile_configurations_match_the_reference_at_head_dims_64_96_128(d, configs):
    tolerance = TRITON_FLASH.tolerance("bfloat16")
    # Full attention over whole 64-blocks (the unmasked inner loops, with a padding mask) ...
    mask = torch.ones(2, 64, dtype=torch.bool, device=DEVICE)
    mask[1, 40:] = False
    _against_reference(*_qkv(2, 1, 64, 64, d, torch.bfloat16), tolerance, key_padding_mask=mask, configs=configs)
    # ... and the causal diagonal with fewer queries than keys and documents, lengths off every block multiple.
    documents = (torch.arange(61, device=DEVICE) >= 20).long().expand(2, -1)
    _against_reference(*_qkv(2, 1, 45, 61, d, torch.bfloat16), tolerance, causal=True, document_ids=documents,
                       configs=configs)


@pytest.mark.parametrize("configs", list(zip(tf.FP32_CONFIGS["fwd"], tf.FP32_CONFIGS["bwd"], strict=True)),
                         ids=lambda c: f"fwd{c[0].kwargs['BLOCK_M']}x{c[0].kwargs['BLOCK_N']}"
                                       f"-bwd{c[1].kwargs['BLOCK_M']}x{c[1].kwargs['BLOCK_N']}")
def test_the_fp32_gpu_configurations_match_the_reference_within_the_fp32_tolerance(configs):
    _against_reference(*_qkv(2, 1, 50, 64, 128), TRITON_FLASH.tolerance("float32"), causal=True, configs=configs)


@pytest.mark.parametrize("splits", [1, 3])
def test_the_backward_gives_the_same_bits_every_run_whatever_the_number_of_dq_splits(monkeypatch, splits):
    monkeypatch.setattr(tf, "dq_splits", lambda *args: splits)
    q, k, v = _qkv(2, 2, 50, 70, 32)
    first = _against_reference(q, k, v, TRITON_FLASH.tolerance("float32"), causal=True)
    second = _against_reference(q, k, v, TRITON_FLASH.tolerance("float32"), causal=True)
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_the_models_permuted_qkv_views_give_the_bits_of_contiguous_inputs_and_heads_merge_as_a_view():
    b, t, h, d = 2, 40, 3, 32
    qkv = torch.randn(b, t, 3, h, d, generator=torch.Generator().manual_seed(0)).to(DEVICE).requires_grad_()
    q, k, v = qkv.permute(2, 0, 3, 1, 4)  # as the transformer passes them: no copies on the way in
    out = flash(q, k, v, causal=True)
    merged = out.transpose(1, 2).reshape(b, t, h * d)
    assert merged.data_ptr() == out.data_ptr()  # the output is (B, T, H, D) memory: no copy on the way out
    grad = torch.randn(b, t, h * d, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    (dqkv,) = torch.autograd.grad(merged, qkv, grad)

    dense = [x.detach().contiguous().requires_grad_() for x in (q, k, v)]
    dense_out = flash(*dense, causal=True)
    dense_grads = torch.autograd.grad(dense_out, dense, grad.view(b, t, h, d).transpose(1, 2).contiguous())
    assert torch.equal(out, dense_out)
    assert all(torch.equal(dqkv.permute(2, 0, 3, 1, 4)[i], g) for i, g in enumerate(dense_grads))


def test_fp32_keeps_ieee_dot_products_and_its_tolerance_when_torch_allows_tf32(monkeypatch):
    # The kernel reads its own allow_tf32 option, never torch's global flags (meaningful on a GPU: TF32 errs ~1e-3).
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", True)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    case = AttentionCase(t_q=64, t_k=64, head_dim=64, causal=True, padded=False, dtype="float32")
    check_attention_kernel(flash, TRITON_FLASH, case, device=DEVICE)


def test_the_allow_tf32_option_trades_fp32_accuracy_for_tensor_cores_within_tf32_error():
    # Opt-in only: the declared fp32 tolerance (1e-5) is for IEEE dot products; TF32 rounds inputs to 10 bits.
    tf32 = tf.TritonFlashAttention(tf.TritonFlashOptions(allow_tf32=True))
    q, k, v = _qkv(2, 2, 64, 64, 64)
    torch.testing.assert_close(tf32(q, k, v, causal=True).double(),
                               naive_attention(*(x.double() for x in (q, k, v)), causal=True), atol=5e-3, rtol=5e-3)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_blocks_outside_sorted_documents_are_skipped_and_ids_that_repeat_apart_still_attend(causal):
    # Sorted ids (packed documents): the kernels visit only the blocks of each block's documents. Ids that come
    # back after another document are one document too (the reference's equality): there nothing is skipped.
    sorted_ids = torch.repeat_interleave(torch.arange(4), torch.tensor([40, 3, 50, 7]))
    repeating = torch.tensor([0, 1, 0, 2, 0, 1] * 17)[:100]
    documents = torch.stack([sorted_ids, repeating]).to(DEVICE)
    _against_reference(*_qkv(2, 2, 100, 100, 16), TRITON_FLASH.tolerance("float32"), causal=causal,
                       document_ids=documents)
    _against_reference(*_qkv(2, 2, 60, 100, 16), TRITON_FLASH.tolerance("float32"), causal=causal,
                       document_ids=documents)
