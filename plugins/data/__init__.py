"""Built-in data sources."""

from hookformer.core.hookspecs import hookimpl
from hookformer.core.parts import PartSpec

_HERE = __name__


@hookimpl
def hookformer_parts():
    return [
        PartSpec("data", "text", "local files, folders and globs: text, JSON Lines, CSV, TSV and Parquet, read with "
                 "`datasets`, cleaned, tokenized and packed",
                 factory=f"{_HERE}.text_files:build", options=f"{_HERE}.text_files:TextFilesOptions"),
        PartSpec("data", "builtin", "the Python documentation corpus shipped with CPython (pydoc topics and the "
                 "standard library's docstrings): no download", factory=f"{_HERE}.python_docs:build",
                 options=f"{_HERE}.python_docs:PythonDocsOptions"),
        PartSpec("data", "sentences", "sentence-level examples (sop / nsp pairs, shuffled spans for sentence_order) "
                 "from the documents of builtin or text", factory=f"{_HERE}.sentences:build",
                 options=f"{_HERE}.sentences:SentencesOptions"),
        PartSpec("data", "prompt_response", "prompt/response pairs from local JSONL, CSV or TSV files for "
                 "supervised fine-tuning (objective sft)", factory=f"{_HERE}.prompt_response:build",
                 options=f"{_HERE}.prompt_response:PromptResponseOptions"),
        PartSpec("data", "saved", "a dataset written with `datasets`' save_to_disk (one split, one text column)",
                 factory=f"{_HERE}.saved:build", options=f"{_HERE}.saved:SavedOptions"),
        PartSpec("data", "labeled", "labeled examples for fine-tuning from local CSV, TSV and JSONL files read with "
                 "`datasets`: sequence classification (single texts or pairs) or token classification",
                 factory=f"{_HERE}.labeled:build", options=f"{_HERE}.labeled:LabeledOptions"),
        PartSpec("data", "stdlib_areas", "fine-tuning demo, no download: classify a standard-library docstring by "
                 "the area of the library it comes from (text, numbers, files, networking, concurrency, ...)",
                 factory=f"{_HERE}.stdlib_areas:build", options=f"{_HERE}.stdlib_areas:StdlibAreasOptions"),
        # sequence to sequence
        PartSpec("data", "pairs", "source/target pairs for sequence-to-sequence training (encoder-decoders) from "
                 "local JSONL, CSV, TSV or Parquet files", factory=f"{_HERE}.pairs:build",
                 options=f"{_HERE}.pairs:PairsOptions"),
        PartSpec("data", "code_summaries", "seq2seq demo, no download: summarize a standard-library function or "
                 "class (source without its docstring) into its docstring's first sentence, split by module",
                 factory=f"{_HERE}.code_summaries:build", options=f"{_HERE}.code_summaries:CodeSummariesOptions"),
        # extractive question answering
        PartSpec("data", "squad", "extractive question answering from local SQuAD-format JSON (v1.1, v2.0 with "
                 "unanswerable questions): question + context windows with the answer's start and end tokens",
                 factory=f"{_HERE}.squad:build", options=f"{_HERE}.squad:SquadOptions"),
        PartSpec("data", "stdlib_qa", "question-answering demo, no download: \"What does NAME return?\" over the "
                 "docstring summaries of a class's or module's members, answered by the span after \"Return\"",
                 factory=f"{_HERE}.stdlib_qa:build", options=f"{_HERE}.stdlib_qa:StdlibQAOptions"),
    ]
