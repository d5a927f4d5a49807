"""The data report (``data_report.json``: what the data stages read, cleaned, dropped, tokenized and packed) as
text, for ``hookformer data``. The data stages themselves are built by :class:`hookformer.core.assemble.Assembly`
(``prepare_data``), the same way for training, evaluation and ``hookformer data``, so what ``hookformer data`` shows
is what training gets, and its caches (cleaned documents, token streams) are the ones training reuses.
"""

from __future__ import annotations


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
    lengths = report.get("lengths")  # {split: {side: {mean, p50, p95, max, truncated}}}, e.g. source/target pairs
    if lengths:
        lines.append(f"token lengths before truncation (tokenizer {report.get('tokenizer', '?')}), and how many "
                     f"were truncated")
        lines.append(f"  {'split':<11} {'side':<8} {'mean':>8} {'median':>7} {'p95':>7} {'max':>7} {'truncated':>10}")
        for split, sides in lengths.items():
            for side, n in sides.items():
                lines.append(f"  {split:<11} {side:<8} {n['mean']:>8} {n['p50']:>7,} {n['p95']:>7,} {n['max']:>7,} "
                             f"{n['truncated']:>10,}")
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
