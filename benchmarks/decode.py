"""Decode throughput side by side: hookformer's generation engine with and without the KV cache, and transformers'
``generate`` on a GPT2LMHeadModel of the same shape.

The model is the default run's decoder with GPT-2's architecture (the ``model`` sections of plugins/default_run.yaml
and, over it, plugins/classic_gpt.yaml: 4 layers, 4 heads, width 192, learned positions, LayerNorm, GELU, biases),
vocabulary 2048, built through the registry with ``sdpa`` attention, and enough positions
for the longest context plus the new tokens; HF's GPT2 has the same shape (SDPA attention, no dropout). Both decode
greedily from the same random prompt ids (every row of a batch the same length: no padding) and always generate the
full number of new tokens (no stop token).

Tokens/s = batch * new / the time of the whole ``generate`` call (the prompt's prefill included: at context 1024
with few new tokens it is a large share of a cached call). The contenders are interleaved (round 1:
each in turn at every context and batch; round 2: ...) so that machine noise hits them alike; a figure is the median
over rounds, and a ratio is the median over rounds of the ratio within a round.

    python benchmarks/decode.py                        # contexts 64, 256, 1024; batch 1 and 8; 32 new tokens
    python benchmarks/decode.py --contexts 64 256 --new 16 --rounds 2
    python benchmarks/decode.py --quick                # smoke test: context 64, batch 1, 4 new tokens
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

VOCAB = 2048
PLUGINS = Path(__file__).resolve().parent.parent / "plugins"


def build_hookformer(max_len: int, device: str):
    from hookformer.core.assemble import Assembly
    from hookformer.core.config import validate
    from hookformer.core.parts import Shapes
    from hookformer.registry.catalog import Catalog

    torch.manual_seed(0)
    model_section = {}
    for recipe in ("default_run", "classic_gpt"):
        model_section.update(yaml.safe_load((PLUGINS / f"{recipe}.yaml").read_text(encoding="utf-8"))["model"])
    config = validate({
        "data": {"name": "builtin"}, "tokenizer": {"name": "byte"},  # validated, never built: the shapes are given
        "model": model_section, "attention": {"name": "sdpa"}, "objective": {"name": "clm"},
        "optimizer": {"name": "adamw"}, "scheduler": {"name": "constant"}, "train": {"device": device},
    }, Catalog.load())
    return Assembly(config, Path("."), device=device, shapes=Shapes(VOCAB, max_len)).model().eval(), model_section


def build_hf(options: dict, max_len: int, device: str):
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB, n_positions=max_len, n_embd=options["d_model"], n_layer=options["n_layer"],
                        n_head=options["n_head"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        activation_function="gelu_new", layer_norm_epsilon=1e-5, tie_word_embeddings=True)
    try:
        model = GPT2LMHeadModel._from_config(config, attn_implementation="sdpa")
    except (TypeError, ValueError, ImportError):
        model = GPT2LMHeadModel(config)
    return model.to(device).eval()


def contenders(ours, hf, device: str) -> dict:
    """name -> generate(prompt ids (B, T), new tokens): each decodes greedily, exactly ``new`` tokens."""
    from hookformer.core.generate import Decoding, generate
    from hookformer.plugins.tokenizers.byte import ByteTokenizer

    tokenizer = ByteTokenizer()

    def engine(use_cache: bool):
        def run(ids: torch.Tensor, new: int):
            decoding = Decoding(max_new_tokens=new, greedy=True, stop_at_eos=False, use_cache=use_cache)
            out = generate(ours, ids.tolist(), decoding, tokenizer=tokenizer, device=device)
            assert all(len(row) == new for row in out)
        return run

    def hf_generate(ids: torch.Tensor, new: int):
        with torch.no_grad():
            out = hf.generate(ids.to(device), attention_mask=torch.ones_like(ids).to(device), max_new_tokens=new,
                              min_new_tokens=new, do_sample=False, num_beams=1, use_cache=True, pad_token_id=0)
        assert out.shape[1] == ids.shape[1] + new

    named = {"hookformer cache": engine(True), "hookformer no cache": engine(False)}
    if hf is not None:
        named["HF generate"] = hf_generate
    return named


def timed(run, ids: torch.Tensor, new: int, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    begin = time.perf_counter()
    run(ids, new)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - begin


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contexts", type=int, nargs="+", default=[64, 256, 1024], help="prompt lengths")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes")
    parser.add_argument("--new", type=int, default=32, help="new tokens per prompt (default 32)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-hf", action="store_true", help="leave out transformers' generate")
    parser.add_argument("--quick", action="store_true", help="smoke test: context 64, batch 1, 4 new tokens, "
                        "1 round; the numbers mean nothing")
    args = parser.parse_args(argv)
    if args.quick:
        args.contexts, args.batches, args.new, args.rounds = [64], [1], 4, 1
    from hookformer.core.precision import cpu_has_native_bf16

    max_len = max(args.contexts) + args.new
    ours, options = build_hookformer(max_len, args.device)
    hf = None if args.no_hf else build_hf(options, max_len, args.device)
    named = contenders(ours, hf, args.device)
    versions = f"torch {torch.__version__}"
    if hf is not None:
        import transformers

        versions += f", transformers {transformers.__version__}"
    print(f"greedy decode throughput on {args.device}: {versions}, {torch.get_num_threads()} threads; CPU "
          f"{torch.backends.cpu.get_cpu_capability()}, native bf16 {cpu_has_native_bf16()}; model "
          f"{options['n_layer']}L {options['n_head']}H {options['d_model']}d vocab {VOCAB}, fp32; {args.new} new "
          f"tokens, {args.rounds} rounds")
    generator = torch.Generator().manual_seed(0)
    cases = [(c, b) for c in args.contexts for b in args.batches]
    prompts = {(c, b): torch.randint(0, VOCAB, (1, c), generator=generator).expand(b, c) for c, b in cases}
    for run in named.values():  # warm up every code path once
        run(prompts[cases[0]], 2)
    rates: dict = {(case, name): [] for case in cases for name in named}
    for _ in range(args.rounds):
        for case in cases:
            for name, run in named.items():
                ids = prompts[case]
                rates[case, name].append(case[1] * args.new / timed(run, ids, args.new, args.device))

    def ratio(case, a: str, b: str) -> str:
        if (case, b) not in rates:
            return "-"
        return f"{statistics.median(x / y for x, y in zip(rates[case, a], rates[case, b])):.2f}x"

    names = list(named)
    print("\n| context | batch | " + " | ".join(f"{name} tok/s" for name in names)
          + " | cache / no cache | cache / HF generate |")
    print("|---:|---:|" + "---:|" * (len(names) + 2))
    for case in cases:
        cells = [f"{statistics.median(rates[case, name]):,.0f}" for name in names]
        print(f"| {case[0]} | {case[1]} | " + " | ".join(cells)
              + f" | {ratio(case, 'hookformer cache', 'hookformer no cache')}"
              f" | {ratio(case, 'hookformer cache', 'HF generate')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
