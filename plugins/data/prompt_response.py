"""Data part ``prompt_response``: prompt/response pairs for supervised fine-tuning of a decoder (objective ``sft``).

Records come from local JSON Lines, CSV or TSV files (``prompt_field`` and ``response_field`` name the columns).
Each becomes one example of ``block_size`` tokens: ``input_ids`` = the prompt (formatted by ``prompt_template``) +
the response (``response_template``) + the end-of-sequence token, padded; ``attention_mask`` 1 on real tokens;
``labels`` = ``input_ids`` with the prompt and padding set to -100, so only the response and its end are learned.
Prompt and response are tokenized separately, so the boundary between them is a token boundary.

An example longer than the block is cut (``truncation``): ``prompt_start`` drops the start of the prompt (the
response is cut at its end only when it alone is longer than the block), ``end`` drops the end of the sequence; an
example left with no response token is dropped. The report counts both. Records are split into training and
validation by a seeded shuffle.

Cleaning: the run's ``cleaning`` steps run over every record's prompt and response (as read, before the templates),
before the split; each field counts as a document in the report's ``cleaning`` table, edits apply to the field, and a
record is dropped when a step removes either of its fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Literal, Sequence

import datasets
import torch
from pydantic import Field, field_validator, model_validator

from hookformer.core.cleaning import CleaningChain
from hookformer.core.datacache import quiet_datasets
from hookformer.core.errors import DataError
from hookformer.core.parts import BuildContext, Cleaner, Tokenizer
from hookformer.plugins.data.common import DataOptions, cache_root, held_out_split, hf_cache, refuse_unhonoured
from hookformer.plugins.data.tabular import read_jsonl, record_format
from hookformer.plugins.data.text_files import resolve_paths

IGNORE = -100
_ENCODE_BATCH = 4096


class PromptResponseOptions(DataOptions):
    paths: list[str] = Field(min_length=1, description="files or glob patterns (** matches any depth); relative "
                             "to the working directory")
    format: Literal["auto", "jsonl", "csv", "tsv"] = Field(
        "auto", description="auto: by suffix (.jsonl/.json, .csv, .tsv); CSV and TSV files have a header row")
    prompt_field: str = Field("prompt", description="the field (column) that holds the prompt")
    response_field: str = Field("response", description="the field (column) that holds the response")
    prompt_template: str = Field("{prompt}\n", description="how the prompt is written before the response; "
                                 "{prompt} is replaced by the prompt")
    response_template: str = Field("{response}", description="how the response is written; {response} is "
                                   "replaced by the response")
    truncation: Literal["prompt_start", "end"] = Field(
        "prompt_start", description="an example longer than block_size: prompt_start drops the start of the prompt; "
        "end drops the end of the response")

    @field_validator("prompt_template", "response_template")
    @classmethod
    def _has_placeholder(cls, value: str, info) -> str:
        placeholder = "{" + info.field_name.removesuffix("_template") + "}"
        if placeholder not in value:
            raise ValueError(f"the template must contain {placeholder}")
        return value

    @model_validator(mode="after")
    def _honoured(self):
        refuse_unhonoured(self, ["num_proc", "max_document_tokens", "document_mask"], "each record is one padded "
                          "example, tokenized in this process and cut by data.truncation", "use data name: text for "
                          "packed documents")
        return self


class PromptResponseSource:
    """A :class:`~hookformer.core.parts.DataSource` of prompt/response examples; ``cleaners`` (``ctx.cleaners``) clean
    both fields of every record (see the module docstring)."""

    applies_cleaning = True

    def __init__(self, records: datasets.Dataset, options: PromptResponseOptions, files: list[Path], seed: int,
                 cleaners: Sequence[Cleaner] = ()):
        self.block_size = options.block_size
        self._options = options
        chain = CleaningChain(cleaners, examples=options.report_examples)
        if chain.steps:
            _, (prompts, responses) = chain.clean_records([records["prompt"], records["response"]])
            records = datasets.Dataset.from_dict({"prompt": prompts, "response": responses})
        if len(records) < 2:
            cleaned = " after cleaning" if chain.steps else ""
            raise DataError(f"{', '.join(map(str, files))} hold {len(records)} record(s){cleaned}: at least two are "
                            f"needed, one for training and one for validation")
        kept, held_out = held_out_split(len(records), options.val_fraction, seed)
        self._splits = {"train": records.select(kept, keep_in_memory=True),
                        "validation": records.select(held_out, keep_in_memory=True)}
        self.report = {"source": "prompt_response", "files": [str(path) for path in files],
                       "bytes": sum(path.stat().st_size for path in files),
                       "records": {split: len(rows) for split, rows in self._splits.items()},
                       "block_size": self.block_size, "truncation": options.truncation,
                       "cleaning": chain.report()}

    def _texts(self, split: str) -> tuple[list[str], list[str]]:
        rows = self._splits[split]
        prompts = [self._options.prompt_template.replace("{prompt}", text) for text in rows["prompt"]]
        responses = [self._options.response_template.replace("{response}", text) for text in rows["response"]]
        return prompts, responses

    def texts(self) -> Iterator[str]:
        """Training prompts and responses as written (to train a tokenizer); validation ones are never among them."""
        for prompt, response in zip(*self._texts("train")):
            yield prompt + response

    def prepare(self, tokenizer: Tokenizer) -> dict[str, dict[str, torch.Tensor]]:
        tables, counts = {}, {}
        for split in self._splits:
            prompts, responses = (_encode(tokenizer, texts) for texts in self._texts(split))
            tables[split], counts[split] = self._table(prompts, responses, tokenizer)
            if counts[split]["examples"] == 0:
                raise DataError(f"no {split} example keeps a response token within data.block_size="
                                f"{self.block_size}: make the block larger or set data.truncation: prompt_start")
        self.report.update(tokenizer=tokenizer.fingerprint(), examples=counts)
        return tables

    def _table(self, prompts: list[list[int]], responses: list[list[int]], tokenizer: Tokenizer):
        n, width = len(prompts), self.block_size
        input_ids = torch.full((n, width), tokenizer.special.pad, dtype=torch.long)
        labels = torch.full((n, width), IGNORE, dtype=torch.long)
        attention_mask = torch.zeros(n, width, dtype=torch.long)
        kept, truncated, dropped, tokens_cut = 0, 0, 0, 0
        for prompt, response in zip(prompts, responses):
            response = [*response, tokenizer.special.eos]
            over = len(prompt) + len(response) - width
            if over > 0:
                truncated += 1
                tokens_cut += over
                if self._options.truncation == "prompt_start":
                    cut = min(over, len(prompt))
                    prompt, response = prompt[cut:], response[:len(response) - (over - cut)]
                else:
                    response = response[:max(0, len(response) - over)]
            if not response:
                dropped += 1
                continue
            length = len(prompt) + len(response)
            input_ids[kept, :length] = torch.tensor(prompt + response)
            labels[kept, len(prompt):length] = torch.tensor(response)
            attention_mask[kept, :length] = 1
            kept += 1
        table = {"input_ids": input_ids[:kept], "attention_mask": attention_mask[:kept], "labels": labels[:kept]}
        return table, {"examples": kept, "truncated": truncated, "dropped": dropped, "tokens_cut": tokens_cut}


def _encode(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [ids for start in range(0, len(texts), _ENCODE_BATCH)
            for ids in tokenizer.encode_batch(texts[start:start + _ENCODE_BATCH])]



def read_records(path: Path, fmt: str, options: PromptResponseOptions, root: Path) -> datasets.Dataset:
    """One file's records as a Dataset with the text columns ``prompt`` and ``response``."""
    fields = {"prompt": options.prompt_field, "response": options.response_field}
    if fmt == "jsonl":
        return datasets.Dataset.from_dict({name: _jsonl_column(path, field, name, root)
                                           for name, field in fields.items()})
    with quiet_datasets():
        # Converters keep each cell's text as written: no number parsing ("06" stays "06"), no empty cell as NaN.
        table = datasets.load_dataset("csv", data_files=[str(path)], split="train", cache_dir=hf_cache(root),
                                      delimiter="\t" if fmt == "tsv" else ",", keep_default_na=False,
                                      converters={field: str for field in fields.values()})
    missing = [f'"{field}" (data.{name}_field)' for name, field in fields.items() if field not in table.column_names]
    if missing:
        raise DataError(f"{path}: no column {' or '.join(missing)}; its header names: "
                        f"{', '.join(table.column_names)}")
    table = table.select_columns(list(fields.values()))
    with quiet_datasets():  # one string type for every file, so that files of several formats concatenate
        table = table.cast(datasets.Features({field: datasets.Value("string") for field in fields.values()}))
    return table.rename_columns({field: name for name, field in fields.items()})


def _jsonl_column(path: Path, field: str, name: str, root: Path) -> list[str]:
    """The text field ``field`` of every record of a JSONL file; its errors name this part's option."""
    try:
        return read_jsonl([path], field, root)["text"]
    except DataError as exc:  # read_jsonl names data.text_field, the option of the text part
        raise DataError(str(exc).replace("data.text_field", f"data.{name}_field")) from exc.__cause__


def build(options: PromptResponseOptions, ctx: BuildContext) -> PromptResponseSource:
    files = [path for path in resolve_paths(options.paths) if path.stat().st_size]
    root = cache_root(options)
    parts = [read_records(path, record_format(path, options.format), options, root) for path in files]
    records = datasets.concatenate_datasets(parts) if parts else datasets.Dataset.from_dict(
        {"prompt": [], "response": []})
    return PromptResponseSource(records, options, files, ctx.seed, ctx.cleaners)
