"""The data stages of a run, on their own: cleaning steps -> data source (read, clean, split) -> tokenizer (trained on
the training split unless it has a model) -> tokenized and packed blocks.

A training run calls :func:`prepare_data` before it builds the model; ``hookformer data`` calls it alone and prints
:func:`format_report`. Both go through the same code, so what ``hookformer data`` shows is what training gets, and
its caches (cleaned documents, token streams) are the ones training reuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hookformer.core.config import RunConfig
from hookformer.core.distributed import World
from hookformer.core.parts import BuildContext, DataSource, Tokenizer


@dataclass
class PreparedData:
    """What the data stages built: the data source (with its ``report``), the tokenizer, and the prepared splits
    ``{"train": ..., "validation": ...}`` (examples tables, or a stream for training: see DataSource.prepare)."""

    data: DataSource
    tokenizer: Tokenizer
    blocks: dict


def build_context(config: RunConfig, run_dir: Path, device: str = "cpu") -> BuildContext:
    """The context parts of ``config`` are built in, for a run in ``run_dir`` (where the tokenizer is saved)."""
    cfg = config.train
    return BuildContext(run_dir=Path(run_dir), catalog=config.catalog, device=device, seed=cfg.seed, train=cfg,
                        total_steps=cfg.max_steps)


def prepare_data(config: RunConfig, ctx: BuildContext, world: World = World()) -> PreparedData:
    """Build the cleaning steps, the data source and the tokenizer of ``config`` into ``ctx`` (``ctx.cleaners``,
    ``ctx.data``, ``ctx.block_size``, ``ctx.tokenizer``), then tokenize and pack both splits.

    Under torchrun rank 0 goes first: it writes the data caches and trains the tokenizer, then the other ranks load
    them.
    """
    parts = config.parts
    ctx.cleaners = [choice.build(ctx) for choice in config.cleaning]
    with world.main_first():
        ctx.data = parts["data"].build(ctx)
        ctx.block_size = ctx.data.block_size
        ctx.tokenizer = parts["tokenizer"].build(ctx)
        blocks = ctx.data.prepare(ctx.tokenizer)
    return PreparedData(ctx.data, ctx.tokenizer, blocks)


def format_report(report: dict, examples: int = 3, width: int = 100) -> str:
    """A data report (``data_report.json``) as text: what was read, a table of the cleaning steps (documents and
    bytes in, kept, removed, changed), up to ``examples`` removed documents per step cut to ``width`` characters,
    then documents, tokens and blocks per split. Sections a data source does not report are left out."""
    lines = []
    if "files" in report:
        files = report["files"]
        lines.append(f"data: {report.get('source', '?')}, {len(files)} file{'s' * (len(files) != 1)}, "
                     f"{_size(report.get('bytes', 0))} read")
    cleaning = report.get("cleaning") or []
    if cleaning:
        cached = " (from the cache)" if report.get("cleaning_cache_hit") else ""
        lines.append(f"cleaning{cached}: documents and bytes entering each step, kept, removed with their "
                     f"document, and taken out by edits")
        lines.append(f"  {'#':>2}  {'step':<18} {'docs in':>9} {'kept':>9} {'removed':>9} {'changed':>9}   "
                     f"{'in':>9} {'kept':>9} {'removed':>9} {'edited':>9}")
        for entry in cleaning:
            docs, size = entry["documents"], entry["bytes"]
            lines.append(f"  {entry['index']:>2}  {entry['step']:<18} {docs['in']:>9,} {docs['kept']:>9,} "
                         f"{docs['removed']:>9,} {docs['changed']:>9,}   {_size(size['in']):>9} "
                         f"{_size(size['kept']):>9} {_size(size['removed']):>9} {_size(size['changed']):>9}")
        for entry in cleaning:
            shown = entry["examples"][:examples]
            if shown:
                lines.append(f"removed by {entry['step']} ({entry['documents']['removed']:,} documents), "
                             f"the first {len(shown)}:")
                lines += [f"  {_excerpt(text, width)}" for text in shown]
    documents = report.get("documents")
    if documents:
        lines.append(f"documents: {documents.get('train', 0):,} train, {documents.get('validation', 0):,} "
                     f"validation ({documents.get('blank_dropped', 0):,} blank dropped)")
    if "tokens" in report:
        lines.append(f"tokenizer: {report.get('tokenizer', '?')}; blocks of {report.get('block_size', '?')} tokens")
        lines.append(f"  {'split':<11} {'tokens':>12} {'blocks':>9} {'tokens dropped':>15} {'cached':>7}")
        for split, tokens in report["tokens"].items():
            hit = report.get("cache_hit", {}).get(split)
            lines.append(f"  {split:<11} {tokens:>12,} {report.get('blocks', {}).get(split, 0):>9,} "
                         f"{report.get('tokens_dropped', {}).get(split, 0):>15,} "
                         f"{'yes' if hit else 'no' if hit is not None else '?':>7}")
    return "\n".join(lines)


def _size(n: int) -> str:
    """Bytes, readable: 950 B, 19.6 kB, 12.3 MB, 1.2 GB (negative when edits added text)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _excerpt(text: str, width: int) -> str:
    """One line: the text's first ``width`` characters, newlines escaped."""
    return repr(text[:width]) + (" ..." if len(text) > width else "")
