"""Fine-tuning throughput side by side: hookformer's encoder vs HF transformers' BertForSequenceClassification.

Two sequence classifiers of the same shape, fine-tuned on the same batches of real sentences (SST-2) with the same
AdamW settings (lr 2e-5, betas (0.9, 0.999), eps 1e-8, weight decay 0.01 on linear weights, fused), gradient
clipping at 1.0, dropout 0.1 everywhere (embeddings, attention weights, residuals, before the classifier) as in BERT
fine-tuning, GELU (tanh approximation) in the MLP, LayerNorm eps 1e-5, fp32:

* hookformer: the ``transformer`` model with ``causal: false``, ``type_vocab_size: 2``, ``pooler: true``, ``sdpa``
  attention (wrapped in its capability check, as ``Run`` does), the ``classification`` objective (which attaches its
  head: pooled output -> dropout -> linear) and the ``adamw`` optimizer, all built through the registry; the step is
  the engine's own (``core.loop.accumulate_gradients`` then clip, step, zero_grad, as in ``Run.train_step``);
* HF BERT: ``transformers.BertForSequenceClassification`` with SDPA attention, the same layers, heads, width, MLP
  width (4x), vocabulary, max positions (= sequence length) and 2 token types, ``hidden_act: gelu_pytorch_tanh`` and
  ``layer_norm_eps: 1e-5`` like hookformer's; its optimizer gets the same parameter groups (hookformer's
  ``decay_groups`` applied to it) and settings.

Both models are also run under ``torch.compile(model)`` (default settings; the optimizer step stays eager) as
separate contenders, unless ``--no-compile``; the compile time (with the warmup steps) and the number of graphs
compiled are reported on their own and never counted in the throughput (Inductor's cache starts empty, so these are
first compilations). The compiled hookformer checks its attention call against the kernel's capabilities once, up
front, instead of through ``CheckedKernel``, whose cache of checked calls breaks the graph at every attention call on
this branch.

The batches are what hookformer's fine-tuning data path makes: the ``labeled`` data part reads SST-2's train.tsv
(from ``shared/data/sst2`` next to the repository or one of its parent folders; generated sentences when it is
missing), a ``sentencepiece`` tokenizer is trained on it in a temporary folder, every example is ``[cls] text [sep]``
padded to the sequence length with an attention mask, and batches are drawn in the engine's seeded order. Both
models get the same batch dicts (``input_ids``, ``attention_mask``, ``token_type_ids`` of zeros, ``labels``), in one
of two paddings (``--padding``, both by default):

* ``max``: as the data part pads them, every example to the sequence length (HF's ``run_glue.py`` default,
  ``pad_to_max_length``). hookformer's classification objective cuts each batch after its longest example
  (``trim_padding``, same loss and gradients); HF BERT computes every position;
* ``longest``: each batch already cut to its longest example (HF's ``DataCollatorWithPadding``): the two models get
  the same lengths, and the comparison is model against model.

The contenders take turns (round 1: a step of each on the same batch, round 2: on the next batch, ...) so that
machine noise hits all of them alike; a contender's examples/s is the median over rounds, and a ratio between two
contenders the median of their per-round ratios.

    python benchmarks/finetune_throughput.py                       # S and M, both paddings, eager and compiled
    python benchmarks/finetune_throughput.py --config S --padding max --no-compile --rounds 20
    python benchmarks/finetune_throughput.py --threads 1           # steadier on cores that others keep busy
    python benchmarks/finetune_throughput.py --quick               # smoke test: S, padding max, eager, 1 step
    python benchmarks/finetune_throughput.py --imported            # hookformer fine-tunes HF BERT's own weights

``--imported``: HF BERT's encoder (``BertModel``, the weights the HF contender starts from) is saved with
``save_pretrained`` beside a WordPiece tokenizer and brought in with ``hookformer import``; the hookformer contenders
are then fine-tuning runs of that imported run (its tokenizer and model sections, its weights loaded, the
classification head attached by the objective), built as ``train.init_from`` builds them, against
``BertForSequenceClassification`` with the same weights, on the same batches.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import count, fmt_ratio, ratio  # noqa: E402  (the same parameter count and ratio of rounds)

LR, BETAS, EPS, WEIGHT_DECAY, CLIP = 2e-5, (0.9, 0.999), 1e-8, 0.01, 1.0
SST2 = Path("shared") / "data" / "sst2" / "train.tsv"


@dataclass(frozen=True)
class Shape:
    name: str
    n_layer: int
    n_head: int
    d_model: int
    seq: int
    batch: int
    vocab: int
    rounds: int  # default rounds
    warmup: int  # default warmup steps per contender

    def describe(self) -> str:
        return (f"config {self.name}: {self.n_layer} layers, {self.n_head} heads, width {self.d_model}, MLP "
                f"{4 * self.d_model}, seq {self.seq}, batch {self.batch}, vocab {self.vocab}, 2 labels")


# S is a small BERT (BERT-mini-like, 4 x 256) and M a BERT-small-like 6 x 512 (the size of a distilled encoder's
# width): big enough that matmuls dominate, small enough that all four contenders finish in a few minutes on 2 cores.
CONFIGS = {
    "S": Shape("S", n_layer=4, n_head=4, d_model=256, seq=128, batch=32, vocab=8000, rounds=9, warmup=2),
    "M": Shape("M", n_layer=6, n_head=8, d_model=512, seq=128, batch=16, vocab=8000, rounds=5, warmup=2),
}


# -- the batches -------------------------------------------------------------------------------------------------------
def find_sst2(start: Path) -> Path | None:
    """SST-2's train.tsv in ``shared/data/sst2`` of ``start`` or of one of its parent folders."""
    for folder in (start, *start.parents):
        if (folder / SST2).is_file():
            return folder / SST2
    return None


def generated_sentences(path: Path, n: int = 20000, seed: int = 0) -> Path:
    """A TSV of ``n`` made-up movie-review sentences (3 to 30 words, label 1 = positive), for when SST-2 is missing."""
    rng = random.Random(seed)
    subjects = ["the film", "this movie", "the cast", "the script", "its director", "the story", "the ending",
                "every scene", "the soundtrack", "the lead actor", "the pacing", "the dialogue"]
    good = ["is wonderful", "shines", "is a delight", "works beautifully", "is moving", "feels fresh", "is sharp"]
    bad = ["is dull", "falls flat", "is a mess", "drags on", "feels tired", "is clumsy", "never works"]
    fillers = ["and", "but", "although", "while", "because", "so", "yet", "as", "even when", "especially since"]
    words = ("remarkably surprisingly oddly quietly painfully often rarely almost never truly genuinely "
             "strangely deeply charming witty bland hollow vivid tender brutal ambitious lazy clever").split()
    lines = ["sentence\tlabel"]
    for _ in range(n):
        label = rng.randint(0, 1)
        clauses = [f"{rng.choice(subjects)} {rng.choice(words)} {rng.choice(good if label else bad)}"
                   for _ in range(rng.randint(1, 5))]
        text = f" {rng.choice(fillers)} ".join(clauses)
        lines.append(f"{' '.join(text.split()[:30])}\t{label}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def hookformer_config(shape: Shape, source: Path, workdir: Path, dropout: float = 0.0, unpad: bool = True,
                      imported: Path | None = None):
    """The run config of the hookformer contender: the ``labeled`` data part (examples padded to ``shape.seq``), a
    ``sentencepiece`` tokenizer of ``shape.vocab`` ids trained on the training texts (kept in ``workdir``), the
    encoder with a pooler and segment embeddings, the ``classification`` objective and AdamW. With ``imported`` (a
    run made by ``hookformer import``), its tokenizer and model sections instead, as ``train.init_from`` gives them."""
    from hookformer.core.config import PRETRAINED_SECTIONS, read_yaml, validate
    from hookformer.registry.catalog import Catalog

    raw = {
        "data": {"name": "labeled", "train_files": [str(source)], "text_field": "sentence", "label_field": "label",
                 "max_length": shape.seq, "cache_dir": str(workdir / "cache")},
        "tokenizer": {"name": "sentencepiece", "vocab_size": shape.vocab},
        "model": {"name": "transformer", "n_layer": shape.n_layer, "n_head": shape.n_head, "d_model": shape.d_model,
                  "dropout": dropout, "causal": False, "type_vocab_size": 2, "pooler": True, "unpad": unpad},
        "attention": {"name": "sdpa"},
        "objective": {"name": "classification", "dropout": dropout},
        "optimizer": {"name": "adamw", "lr": LR, "betas": list(BETAS), "eps": EPS, "weight_decay": WEIGHT_DECAY,
                      "fused": True},
        "scheduler": {"name": "constant"},
        "train": {"seed": 0, "device": "cpu"},
    }
    if imported is not None:
        saved = read_yaml(imported / "config.yaml")
        raw.update({name: saved[name] for name in PRETRAINED_SECTIONS})
        raw["model"].update(dropout=dropout, unpad=unpad)
        raw["data"]["cache_dir"] = str(workdir / "cache_imported")
    return validate(raw, Catalog.load())


def make_batches(shape: Shape, source: Path, workdir: Path, count_: int) -> tuple[list[dict], dict]:
    """``count_`` training batches of ``shape.batch`` examples, as the engine makes them (the data stages of
    :func:`hookformer_config`, batches in ``TableStream`` order). Returns the batches and a few figures about them."""
    from hookformer.core.assemble import Assembly
    from hookformer.core.sampler import TableStream, as_table

    assembly = Assembly(hookformer_config(shape, source, workdir), workdir)
    table = as_table(assembly.prepare_data()["train"])
    stream = TableStream(table, seed=0)
    batches = [stream.next_batch(shape.batch) for _ in range(count_)]
    for batch in batches:
        batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])  # HF BERT adds segment 0 when given none
    # The first two batches differ in their longest example (rounded up to 8, as the classification objective cuts):
    # the warmup then also covers the recompilation torch.compile makes at the first new shape.
    lengths = [-(-longest(batch) // 8) for batch in batches]
    other = next((i for i, n in enumerate(lengths) if n != lengths[0]), 1)
    batches[1], batches[other] = batches[other], batches[1]
    figures = {"examples": len(table["input_ids"]), "vocab": assembly.tokenizer().vocab_size,
               "real_tokens": sum(int(b["attention_mask"].sum()) for b in batches) / (count_ * shape.batch),
               "longest": sum(longest(b) for b in batches) / count_, "data": (source, workdir)}
    return batches, figures


def longest(batch: dict) -> int:
    return int(batch["attention_mask"].sum(dim=1).max())


def padded_to_longest(batch: dict) -> dict:
    """``batch`` cut to its longest example, as HF's DataCollatorWithPadding pads."""
    n = longest(batch)
    return {name: tensor[:, :n] if tensor.dim() == 2 else tensor for name, tensor in batch.items()}


# -- the contenders: each is (model, step function); step() trains on one batch and returns its mean loss --------------
def build_hookformer(shape: Shape, data: tuple[Path, Path], dropout: float, unpad: bool = True):
    """Model, objective and optimizer of :func:`hookformer_config`, assembled as a run assembles them (the data
    stages come from the cache and the tokenizer ``make_batches`` left in the work folder)."""
    from hookformer.core.assemble import Assembly

    torch.manual_seed(0)
    source, workdir = data
    assembly = Assembly(hookformer_config(shape, source, workdir, dropout, unpad), workdir)
    assembly.prepare_data()
    return assembly.model(), assembly.objective(), assembly.optimizer()


def import_hf_bert(shape: Shape, vocab: int, dropout: float, folder: Path, source: Path) -> Path:
    """The encoder of the HF BERT contender (``build_hf``: the same weights) saved with ``save_pretrained`` beside a
    WordPiece tokenizer trained on the sentences, then made a run by ``hookformer import``; returns the run."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    from hookformer.core.interop import import_hf
    from hookformer.registry.catalog import Catalog

    model, _ = build_hf(shape, vocab, dropout)
    model.bert.save_pretrained(folder / "hf", safe_serialization=True)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = normalizers.BertNormalizer(), pre_tokenizers.BertPreTokenizer()
    sentences = [line.split("\t")[0] for line in source.read_text(encoding="utf-8").splitlines()[1:]]
    tok.train_from_iterator(sentences, trainers.WordPieceTrainer(
        vocab_size=vocab, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    tok.save(str(folder / "hf" / "tokenizer.json"))
    import_hf(folder / "hf", folder / "run", Catalog.load())
    return folder / "run"


def build_imported(shape: Shape, data: tuple[Path, Path], dropout: float, run_dir: Path):
    """Model, objective and optimizer of a fine-tuning run of the imported BERT ``run_dir`` (as ``Run`` builds them
    for ``train.init_from``: its weights loaded, the classification head fresh)."""
    from hookformer.core import checkpoint
    from hookformer.core.assemble import Assembly

    torch.manual_seed(0)
    source, workdir = data
    path = checkpoint.latest(run_dir)
    assembly = Assembly(hookformer_config(shape, source, workdir, dropout, imported=run_dir), workdir,
                        init_from=run_dir, checkpoint=path)
    assembly.prepare_data()
    model, objective = assembly.model(), assembly.objective()
    checkpoint.load_pretrained(path, model)
    return model, objective, assembly.optimizer()


def hookformer_step(model, objective, optimizer):
    from hookformer.core.loop import accumulate_gradients

    def step(batch):  # Run.train_step, less the scheduler and the bookkeeping
        loss_sum, items, _ = accumulate_gradients(model, objective, [batch])
        params = [p for p in model.parameters() if p.grad is not None]
        float(torch.nn.utils.clip_grad_norm_(params, CLIP))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss_sum / max(1, items)

    return step


def build_hf(shape: Shape, vocab: int, dropout: float):
    from transformers import BertConfig, BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    from hookformer.core.params import param_groups, with_weight_decay

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=vocab, hidden_size=shape.d_model, num_hidden_layers=shape.n_layer,
                        num_attention_heads=shape.n_head, intermediate_size=4 * shape.d_model,
                        hidden_act="gelu_pytorch_tanh", max_position_embeddings=shape.seq, type_vocab_size=2,
                        layer_norm_eps=1e-5, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                        classifier_dropout=dropout, num_labels=2, pad_token_id=0)
    model = BertForSequenceClassification._from_config(config, attn_implementation="sdpa")
    optimizer = torch.optim.AdamW(with_weight_decay(param_groups(model), WEIGHT_DECAY), lr=LR, betas=BETAS, eps=EPS,
                                  fused=True)
    return model, optimizer


def hf_step(model, optimizer):
    def step(batch):
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     token_type_ids=batch["token_type_ids"], labels=batch["labels"]).loss
        loss.backward()
        float(torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def contenders(shape: Shape, data: tuple[Path, Path], vocab: int, dropout: float, compiled: bool,
               imported: Path | None = None) -> dict:
    """name -> (model, step). Every contender is a separate model with the same initial weights; "hookformer padded"
    is hookformer with ``model.unpad: false``, which computes every position as HF BERT does. With ``imported``, the
    hookformer contenders are fine-tuning runs of that imported run (HF BERT's own weights)."""
    def build(unpad: bool = True):
        return (build_hookformer(shape, data, dropout, unpad) if imported is None else
                build_imported(shape, data, dropout, imported))

    result = {}
    for suffix, wrap in [("", lambda m: m)] + ([(" compiled", torch.compile)] if compiled else []):
        model, objective, optimizer = build()
        result["hookformer" + suffix] = (model, hookformer_step(wrap(model), objective, optimizer))
        if not suffix and imported is None:  # compiled, the model computes padded anyway (fixed shapes)
            model, objective, optimizer = build(unpad=False)
            result["hookformer padded"] = (model, hookformer_step(model, objective, optimizer))
        model, optimizer = build_hf(shape, vocab, dropout)
        result["HF BERT" + suffix] = (model, hf_step(wrap(model), optimizer))
    return result


# -- timing ------------------------------------------------------------------------------------------------------------
def run_steps(step, batches, n: int, start: int) -> tuple[float, float, int]:
    """n training steps on batches[start:], cycling; returns (seconds, last loss, graphs torch.compile made)."""
    from torch._dynamo.utils import counters

    graphs = counters["stats"]["unique_graphs"]
    begin = time.perf_counter()
    for i in range(n):
        loss = step(batches[(start + i) % len(batches)])
    return time.perf_counter() - begin, float(loss), counters["stats"]["unique_graphs"] - graphs


def bench(shape: Shape, batches: list[dict], figures: dict, dropout: float, compiled: bool, steps: int, warmup: int,
          rounds: int, imported: Path | None = None) -> dict:
    models = contenders(shape, figures["data"], figures["vocab"], dropout, compiled, imported)
    result = {name: {"params": count(model), "rates": [], "loss": float("nan"), "recompiled": 0}
              for name, (model, _) in models.items()}
    for name, (model, step) in models.items():
        model.train()
        result[name]["warmup_s"], _, result[name]["graphs"] = run_steps(step, batches, warmup, 0)
    for r in range(rounds):
        for name, (_, step) in models.items():
            gc.collect()
            seconds, loss, graphs = run_steps(step, batches, steps, warmup + r * steps)
            result[name]["rates"].append(steps * shape.batch / seconds)
            result[name]["loss"] = loss
            result[name]["recompiled"] += graphs
    for entry in result.values():
        entry["ex_s"] = statistics.median(entry["rates"])
    del models
    torch._dynamo.reset()  # each model instance counts towards torch.compile's recompilation limit otherwise
    gc.collect()
    return result


RATIOS = [("hookformer", "HF BERT", "eager"), ("hookformer padded", "HF BERT", "eager, unpad off"),
          ("hookformer compiled", "HF BERT compiled", "compiled"),
          ("hookformer compiled", "HF BERT", "ours compiled / HF eager")]


def print_table(shape: Shape, padding: str, result: dict, steps: int, warmup: int, rounds: int) -> None:
    print(f"\n{shape.describe()}; padding {padding}; {rounds} round(s) x {steps} steps after {warmup} warmup, "
          f"{shape.batch} examples/step")
    print(f"  {'model':<20} {'params':>11} {'ex/s median':>12}  {'loss':>6}  {'warmup s':>8}  {'graphs':>6}  "
          "per round ex/s")
    for name, entry in result.items():
        rounds_s = " ".join(f"{rate:.1f}" for rate in entry["rates"])
        print(f"  {name:<20} {entry['params']:>11,} {entry['ex_s']:>12.1f}  {entry['loss']:>6.3f}  "
              f"{entry['warmup_s']:>8.1f}  {entry['graphs'] or '-':>6}  {rounds_s}")
        if entry["recompiled"]:
            print(f"  note: {name} compiled {entry['recompiled']} graph(s) during the timed steps")
    print("  hookformer / HF: " + "   ".join(f"{label} {fmt_ratio(ratio(result, a, b))}" for a, b, label in RATIOS
                                            if a in result and b in result) + "   (target >= 1.2x)")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=["S", "M", "all"], default=None, help="default: all (S with --quick)")
    parser.add_argument("--padding", choices=["max", "longest", "all"], default=None, help="max: examples padded to "
                        "the sequence length, as the labeled data part pads them; longest: each batch cut to its "
                        "longest example (default: all; max with --quick)")
    parser.add_argument("--steps", type=int, default=1, help="timed steps per contender per round (default 1: "
                        "the contenders take turns step by step)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per contender first, at least 2: "
                        "the first two compile a compiled contender, for a first and a second shape (default 2)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds; the median is reported "
                        "(default: S 9, M 5)")
    parser.add_argument("--dropout", type=float, default=0.1, help="dropout of both models (default 0.1, BERT's)")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile contenders")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's, one per "
                        "core); on cores that other processes keep busy, 1 thread is faster and far steadier")
    parser.add_argument("--data", type=Path, default=None, help="a TSV with sentence and label columns (default: "
                        "SST-2's train.tsv under shared/data/sst2 of the repository's parent folders, else "
                        "generated sentences)")
    parser.add_argument("--imported", action="store_true", help="the hookformer contender is HF BERT's own encoder "
                        "(its weights saved with save_pretrained) brought in by `hookformer import` and fine-tuned "
                        "as train.init_from does; the same batches and optimizer settings")
    parser.add_argument("--quick", action="store_true", help="smoke test: config S and padding max unless given, "
                        "eager only, 2 warmup steps, 2 rounds; the numbers mean nothing")
    args = parser.parse_args(argv)
    if args.quick:
        args.config, args.padding = args.config or "S", args.padding or "max"
        args.rounds, args.no_compile = args.rounds or 2, True
    args.config, args.padding = args.config or "all", args.padding or "all"
    shapes = [CONFIGS[c] for c in ("S", "M") if args.config in (c, "all")]
    paddings = [p for p in ("max", "longest") if args.padding in (p, "all")]
    if args.threads:
        torch.set_num_threads(args.threads)

    import transformers

    print(f"fine-tuning throughput on cpu: torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{torch.get_num_threads()} threads, load average {load()}; AdamW lr {LR}, betas {BETAS}, weight decay "
          f"{WEIGHT_DECAY}, fused; clip {CLIP}; dropout {args.dropout}; fp32")
    source = args.data or find_sst2(Path(__file__).resolve().parent.parent)
    rows = []
    with tempfile.TemporaryDirectory(prefix="finetune_throughput_") as tmp:
        # A fresh Inductor cache: compile times are those of a first compilation, for both models alike.
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(tmp) / "inductor")
        if source is None:
            source = generated_sentences(Path(tmp) / "generated.tsv")
            print("note: SST-2 not found (shared/data/sst2/train.tsv); using generated sentences")
        prepared = {}
        for shape in shapes:
            rounds, warmup = args.rounds or shape.rounds, max(2, args.warmup or shape.warmup)
            key = (shape.seq, shape.vocab, shape.batch)
            if key not in prepared:
                begin = time.perf_counter()
                prepared[key] = make_batches(shape, source, Path(tmp) / f"data_{len(prepared)}", 16)
                figures = prepared[key][1]
                print(f"data: {source} ({figures['examples']:,} training examples), sentencepiece vocab "
                      f"{figures['vocab']:,} ({time.perf_counter() - begin:.0f} s); {len(prepared[key][0])} batches "
                      f"of {shape.batch}: {figures['real_tokens']:.1f} real tokens per example, the longest of a "
                      f"batch {figures['longest']:.1f} on average, padded to {shape.seq}")
            batches, figures = prepared[key]
            imported = None
            if args.imported:
                folder = Path(tmp) / f"imported_{shape.name}"
                imported = import_hf_bert(shape, figures["vocab"], args.dropout, folder, source)
                print(f"imported HF BERT's encoder: {imported} (the hookformer contenders fine-tune it)")
            for padding in paddings:
                padded = batches if padding == "max" else [padded_to_longest(batch) for batch in batches]
                result = bench(shape, padded, figures, args.dropout, not args.no_compile, args.steps, warmup,
                               rounds, imported)
                print_table(shape, padding, result, args.steps, warmup, rounds)
                rows.append((shape, padding, result))

    print(f"\nload average at the end: {load()}")
    print("\n| config | padding | params (ours / HF) | hookformer ex/s | HF BERT ex/s | ours / HF eager "
          "| hookformer padded ex/s | padded / HF eager | hookformer compiled ex/s | HF BERT compiled ex/s | ours / HF compiled | compile + warmup s (ours / HF) |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for shape, padding, result in rows:
        def cell(name, key="ex_s", spec=".1f"):
            return format(result[name][key], spec) if name in result else "-"

        print(f"| {shape.name} ({shape.n_layer}L {shape.n_head}H {shape.d_model}d, T={shape.seq}, B={shape.batch}) "
              f"| {padding} | {cell('hookformer', 'params', ',')} / {cell('HF BERT', 'params', ',')} "
              f"| {cell('hookformer')} | {cell('HF BERT')} | {fmt_ratio(ratio(result, 'hookformer', 'HF BERT'))} "
              f"| {cell('hookformer padded')} | {fmt_ratio(ratio(result, 'hookformer padded', 'HF BERT'))} "
              f"| {cell('hookformer compiled')} | {cell('HF BERT compiled')} "
              f"| {fmt_ratio(ratio(result, 'hookformer compiled', 'HF BERT compiled'))} "
              f"| {cell('hookformer compiled', 'warmup_s', '.0f')} / {cell('HF BERT compiled', 'warmup_s', '.0f')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
