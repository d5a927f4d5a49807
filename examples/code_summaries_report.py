"""The figures of the README's code-summarization demo, from a run of the recipe ``code_summaries``: BLEU and
ROUGE-L of the run's latest checkpoint on the first N validation examples (greedy decoding, as its evaluation), of the
two baselines on the same examples (the defined name split into words; the most frequent training summary), and a
Markdown table of sample sources, references and generated summaries.

    python examples/code_summaries_report.py RUN_DIR [--examples 338] [--samples 8]

The scores come from the metric parts ``bleu`` and ``rouge`` (sacrebleu and rouge-score), built with their defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from hookformer.core import checkpoint
from hookformer.core.assemble import Assembly
from hookformer.core.config import read_yaml, validate
from hookformer.core.evaluate import generated_texts
from hookformer.core.generate import Decoding
from hookformer.core.sampler import as_table
from hookformer.plugins.data.code_summaries import most_frequent, name_words
from hookformer.plugins.metrics import bleu, rouge
from hookformer.registry.catalog import Catalog


def scores(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """BLEU (0-100) and ROUGE-1/2/L (0-1) of the texts, by the metric parts."""
    values = {}
    for metric in (bleu.build(bleu.BLEUOptions(), None), rouge.build(rouge.ROUGEOptions(), None)):
        values.update(metric.score(predictions, references))
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--examples", type=int, default=None, help="validation examples (default: all)")
    parser.add_argument("--samples", type=int, default=8, help="rows of the sample table")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()

    config = validate(read_yaml(args.run_dir / "config.yaml"), Catalog.load())
    path = checkpoint.find(args.run_dir, "latest")
    assembly = Assembly(config, args.run_dir, device="cpu", checkpoint=path)
    splits = assembly.prepare_data()
    data, tokenizer, model = assembly.data(), assembly.tokenizer(), assembly.model()
    checkpoint.load_weights(path, model)
    table = as_table(splits["validation"])
    n = len(table["input_ids"]) if args.examples is None else min(args.examples, len(table["input_ids"]))
    torch.set_grad_enabled(False)
    generated, references = generated_texts(model.eval(), table, Decoding(greedy=True,
                                            max_new_tokens=args.max_new_tokens), tokenizer, max_examples=n,
                                            batch_size=config.train.batch_size)
    sources = data.pairs("validation").sources[:n]
    frequent = most_frequent(data.pairs("train").targets)
    rows = {f"model (step {checkpoint.manifest(path)['step']}, greedy)": generated,
            "baseline: name split into words": [name_words(source) for source in sources],
            f'baseline: most frequent training summary ("{frequent}")': [frequent] * n}
    print(f"{n} validation examples (modules never seen in training)\n")
    print("| | BLEU | ROUGE-1 | ROUGE-2 | ROUGE-L |\n|---|---:|---:|---:|---:|")
    for name, predictions in rows.items():
        values = scores(predictions, references)
        print(f"| {name} | {values['bleu']:.2f} | {values['rouge1']:.3f} | {values['rouge2']:.3f} | "
              f"{values['rougeL']:.3f} |")
    print("\n| source (first line) | reference | generated |\n|---|---|---|")
    for source, reference, prediction in list(zip(sources, references, generated))[:args.samples]:
        cells = [f"`{source.splitlines()[0]}`", reference[0], prediction]
        print("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")


if __name__ == "__main__":
    main()
