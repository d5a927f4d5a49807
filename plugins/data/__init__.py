"""Built-in data sources."""

from hookformer.core.hookspecs import hookimpl
from hookformer.core.parts import PartSpec

_HERE = __name__


@hookimpl
def hookformer_parts():
    return [
        PartSpec("data", "text", "local text (.txt) and JSONL files read with `datasets`, tokenized and packed",
                 factory=f"{_HERE}.text_files:build", options=f"{_HERE}.text_files:TextFilesOptions"),
        PartSpec("data", "builtin", "the Python documentation corpus shipped with CPython (pydoc topics and the "
                 "standard library's docstrings): no download", factory=f"{_HERE}.python_docs:build",
                 options=f"{_HERE}.python_docs:PythonDocsOptions"),
        PartSpec("data", "labeled", "labeled examples for fine-tuning from local CSV, TSV and JSONL files read with "
                 "`datasets`: sequence classification (single texts or pairs) or token classification",
                 factory=f"{_HERE}.labeled:build", options=f"{_HERE}.labeled:LabeledOptions"),
        PartSpec("data", "stdlib_areas", "fine-tuning demo, no download: classify a standard-library docstring by "
                 "the area of the library it comes from (text, numbers, files, networking, concurrency, ...)",
                 factory=f"{_HERE}.stdlib_areas:build", options=f"{_HERE}.stdlib_areas:StdlibAreasOptions"),
    ]
