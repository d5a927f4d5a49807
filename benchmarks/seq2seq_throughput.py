"""Encoder-decoder training throughput side by side: hookformer's ``encoder_decoder`` vs HF transformers'
BartForConditionalGeneration of the same shape.

Both models are BART-shaped: post-norm blocks, a norm on the summed embeddings of each stack, learned positions,
exact GELU, biases, LayerNorm eps 1e-5, one token embedding shared by the encoder, the decoder and the output
projection, no final norm; the same layers, heads, width, MLP width (4x) and vocabulary. fp32, AdamW (lr 1e-4,
weight decay 0.01 on linear weights, fused), no dropout (so that both do exactly the same work). Contenders:

* hookformer: ``encoder_decoder`` built through the registry with ``sdpa`` attention in its capability check (as a run
  wraps it), ``unpad: true`` (the default: embeddings, norms, projections and MLP on real tokens only);
* hookformer padded: the same with ``unpad: false``, computing every position as BART does;
* HF BART: ``BartForConditionalGeneration`` with ``attn_implementation="sdpa"``.

Every contender trains on the same batches: sources and targets of random ids with random lengths (uniform between a
quarter of and the full sequence length), right-padded, with attention masks; the target starts with bos, the labels
are the target shifted by one (-100 on padding), and the loss is the mean cross-entropy over real target tokens (HF
computes it from ``labels``, hookformer's side with ``F.cross_entropy`` on the logits). The contenders take turns
step by step (round r: one step of each on batch r), tokens/s (real source + target tokens) is the median over rounds
and a ratio the median of the per-round ratios, so that machine noise hits all of them alike.

    python benchmarks/seq2seq_throughput.py                 # config S and M
    python benchmarks/seq2seq_throughput.py --config S --rounds 15 --threads 1
    python benchmarks/seq2seq_throughput.py --quick         # smoke test: S, 2 rounds; the numbers mean nothing
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import count, fmt_ratio, ratio  # noqa: E402  (parameter count and the median ratio of rounds)

LR, WEIGHT_DECAY, BOS, PAD = 1e-4, 0.01, 1, 0


@dataclass(frozen=True)
class Shape:
    name: str
    n_layer: int  # per stack
    n_head: int
    d_model: int
    seq: int  # longest source and target
    batch: int
    vocab: int
    rounds: int

    def describe(self) -> str:
        return (f"config {self.name}: {self.n_layer} encoder + {self.n_layer} decoder layers, {self.n_head} heads, "
                f"width {self.d_model}, MLP {4 * self.d_model}, source and target up to {self.seq}, batch "
                f"{self.batch}, vocab {self.vocab}")


CONFIGS = {
    "S": Shape("S", n_layer=3, n_head=4, d_model=256, seq=64, batch=16, vocab=8000, rounds=9),
    "M": Shape("M", n_layer=6, n_head=8, d_model=512, seq=64, batch=8, vocab=8000, rounds=5),
}


def make_batches(shape: Shape, n: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)

    def padded(lengths):
        ids = torch.randint(2, shape.vocab, (shape.batch, shape.seq), generator=g)
        mask = (torch.arange(shape.seq) < lengths[:, None]).long()
        return ids * mask, mask

    batches = []
    for _ in range(n):
        low = max(2, shape.seq // 4)
        src, src_mask = padded(torch.randint(low, shape.seq + 1, (shape.batch,), generator=g))
        tgt, tgt_mask = padded(torch.randint(low, shape.seq + 1, (shape.batch,), generator=g))
        tgt[:, 0] = BOS
        labels = torch.cat([tgt[:, 1:], torch.zeros_like(tgt[:, :1])], dim=1)
        labels = labels.masked_fill(torch.cat([tgt_mask[:, 1:], torch.zeros_like(tgt_mask[:, :1])], 1) == 0, -100)
        batches.append({"input_ids": src, "attention_mask": src_mask, "decoder_input_ids": tgt,
                        "decoder_attention_mask": tgt_mask, "labels": labels})
    return batches


def real_tokens(batch: dict) -> int:
    return int(batch["attention_mask"].sum() + batch["decoder_attention_mask"].sum())


def adamw(model):
    from hookformer.core.params import param_groups, with_weight_decay

    return torch.optim.AdamW(with_weight_decay(param_groups(model), WEIGHT_DECAY), lr=LR, fused=True)


def build_hookformer(shape: Shape, unpad: bool):
    """The registered ``encoder_decoder`` with BART's options, and the sdpa kernel wrapped as a run wraps it."""
    from hookformer.core.capabilities import CheckedKernel
    from hookformer.core.parts import BuildContext, Shapes
    from hookformer.registry.catalog import Catalog

    catalog = Catalog.load()
    kernel_entry, entry = catalog.get("attention", "sdpa"), catalog.get("model", "encoder_decoder")
    ctx = BuildContext(run_dir=Path("."), catalog=catalog, shapes=Shapes(vocab_size=shape.vocab, max_seq_len=shape.seq))
    attention = CheckedKernel("sdpa", kernel_entry.build(kernel_entry.options_model()(), ctx),
                              kernel_entry.capabilities())
    options = entry.options_model()(
        n_layer=shape.n_layer, n_head=shape.n_head, d_model=shape.d_model, norm_position="post", embedding_norm=True,
        mlp="gelu_exact", positions="learned", share_embeddings=True, tie_embeddings=True, unpad=unpad)
    torch.manual_seed(0)
    model = entry.build(options, BuildContext(run_dir=Path("."), attention=attention, shapes=ctx.shapes))
    optimizer = adamw(model)

    def step(batch):
        logits = model(batch["input_ids"], batch["attention_mask"], decoder_input_ids=batch["decoder_input_ids"],
                       decoder_attention_mask=batch["decoder_attention_mask"])
        loss = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return model, step


def build_hf(shape: Shape):
    from transformers import BartConfig, BartForConditionalGeneration
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    config = BartConfig(vocab_size=shape.vocab, d_model=shape.d_model, encoder_layers=shape.n_layer,
                        decoder_layers=shape.n_layer, encoder_attention_heads=shape.n_head,
                        decoder_attention_heads=shape.n_head, encoder_ffn_dim=4 * shape.d_model,
                        decoder_ffn_dim=4 * shape.d_model, max_position_embeddings=shape.seq, dropout=0.0,
                        attention_dropout=0.0, activation_dropout=0.0, activation_function="gelu",
                        pad_token_id=PAD, bos_token_id=BOS, eos_token_id=2, decoder_start_token_id=BOS,
                        forced_eos_token_id=None, scale_embedding=False, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = BartForConditionalGeneration._from_config(config, attn_implementation="sdpa")
    optimizer = adamw(model)

    def step(batch):
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     decoder_input_ids=batch["decoder_input_ids"],
                     decoder_attention_mask=batch["decoder_attention_mask"], labels=batch["labels"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return model, step


def bench(shape: Shape, rounds: int, warmup: int = 2) -> dict:
    batches = make_batches(shape, warmup + rounds)
    contenders = {"hookformer": build_hookformer(shape, unpad=True),
                  "hookformer padded": build_hookformer(shape, unpad=False), "HF BART": build_hf(shape)}
    result = {name: {"params": count(model), "rates": [], "loss": float("nan")}
              for name, (model, _) in contenders.items()}
    for _, step in contenders.values():
        for batch in batches[:warmup]:
            step(batch)
    for batch in batches[warmup:]:
        for name, (_, step) in contenders.items():
            gc.collect()
            begin = time.perf_counter()
            result[name]["loss"] = step(batch)
            result[name]["rates"].append(real_tokens(batch) / (time.perf_counter() - begin))
    for entry in result.values():
        entry["tok_s"] = statistics.median(entry["rates"])
    return result


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=["S", "M", "all"], default=None, help="default: all (S with --quick)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds, one step of each contender "
                        "per round; the median is reported (default: S 9, M 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's); on "
                        "cores that other processes keep busy, 1 thread is steadier")
    parser.add_argument("--quick", action="store_true", help="smoke test: config S, 2 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.config, args.rounds = args.config or "S", args.rounds or 2
    shapes = [CONFIGS[c] for c in ("S", "M") if (args.config or "all") in (c, "all")]
    if args.threads:
        torch.set_num_threads(args.threads)

    import transformers

    print(f"seq2seq training throughput on cpu: torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} cores, load average {load()}; AdamW lr {LR}, fused; "
          "no dropout; fp32")
    rows = []
    for shape in shapes:
        rounds = args.rounds or shape.rounds
        result = bench(shape, rounds)
        print(f"\n{shape.describe()}; {rounds} interleaved rounds after 2 warmup steps each")
        print(f"  {'model':<18} {'params':>11} {'tok/s median':>13}  {'last loss':>9}  per round tok/s")
        for name, entry in result.items():
            print(f"  {name:<18} {entry['params']:>11,} {entry['tok_s']:>13.0f}  {entry['loss']:>9.3f}  "
                  + " ".join(f"{rate:.0f}" for rate in entry["rates"]))
        rows.append((shape, result))
    print(f"\nload average at the end: {load()}")
    print("\n| config | params (ours / HF) | hookformer tok/s | hookformer padded tok/s | HF BART tok/s "
          "| ours / HF | padded / HF |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for shape, result in rows:
        print(f"| {shape.name} ({shape.n_layer}+{shape.n_layer}L {shape.n_head}H {shape.d_model}d, T={shape.seq}, "
              f"B={shape.batch}) | {result['hookformer']['params']:,} / {result['HF BART']['params']:,} "
              f"| {result['hookformer']['tok_s']:.0f} | {result['hookformer padded']['tok_s']:.0f} "
              f"| {result['HF BART']['tok_s']:.0f} | {fmt_ratio(ratio(result, 'hookformer', 'HF BART'))} "
              f"| {fmt_ratio(ratio(result, 'hookformer padded', 'HF BART'))} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
