"""Built-in cleaning steps (stage ``cleaner``), applied in the order the config's ``cleaning`` list names them.

A sensible order: edit first (``nfkc``, ``strip_markup``, ``strip_control``, ``whitespace``), then filter
(``length_filter``, ``repetition_filter``), then deduplicate (``exact_dedup``, ``minhash_dedup``), so filters and
deduplication see cleaned text.
"""

from hookformer.core.hookspecs import hookimpl
from hookformer.core.parts import PartSpec

_HERE = __name__


@hookimpl
def hookformer_parts() -> list[PartSpec]:
    return [
        PartSpec("cleaner", "nfkc", "Unicode normalization (NFKC by default): ligatures, full-width forms and "
                 "no-break spaces become plain characters",
                 factory=f"{_HERE}.nfkc:build", options=f"{_HERE}.nfkc:NfkcOptions"),
        PartSpec("cleaner", "strip_control", "removes control characters except newline and tab; \\r\\n and \\r "
                 "become \\n",
                 factory=f"{_HERE}.strip_control:build", options=f"{_HERE}.strip_control:StripControlOptions"),
        PartSpec("cleaner", "strip_markup", "removes stray HTML/XML tags, comments, script/style elements and decodes "
                 "character references; conservative: only tags that are plainly markup",
                 factory=f"{_HERE}.strip_markup:build", options=f"{_HERE}.strip_markup:StripMarkupOptions"),
        PartSpec("cleaner", "whitespace", "collapses runs of spaces and tabs inside lines, trims line ends, caps runs "
                 "of blank lines; keeps indentation",
                 factory=f"{_HERE}.whitespace:build", options=f"{_HERE}.whitespace:WhitespaceOptions"),
        PartSpec("cleaner", "length_filter", "removes documents with too few or too many characters or "
                 "whitespace-separated words",
                 factory=f"{_HERE}.length_filter:build", options=f"{_HERE}.length_filter:LengthFilterOptions"),
        PartSpec("cleaner", "repetition_filter", "removes repetitive documents: Gopher's duplicate-line and repeated "
                 "n-gram rules and thresholds",
                 factory=f"{_HERE}.repetition_filter:build",
                 options=f"{_HERE}.repetition_filter:RepetitionFilterOptions"),
        PartSpec("cleaner", "exact_dedup", "removes later copies of a document, ignoring case and whitespace "
                 "(stateful)",
                 factory=f"{_HERE}.exact_dedup:build", options=f"{_HERE}.exact_dedup:ExactDedupOptions"),
        PartSpec("cleaner", "minhash_dedup", "removes near-duplicates: MinHash signatures of word shingles with LSH "
                 "at a Jaccard threshold (stateful)",
                 factory=f"{_HERE}.minhash_dedup:build", options=f"{_HERE}.minhash_dedup:MinHashDedupOptions"),
    ]
