"""What a part is: the spec a plugin returns for registration, and the protocol each stage's built part follows.

Nothing here imports torch: specs are declarative, so listing parts stays cheap. Heavy modules are imported only when
a part is built, through the ``factory`` reference ("module:attribute").
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

#: The stages of a run. A config has one section per stage (``metrics`` and ``callbacks`` are lists).
STAGES = (
    "tokenizer",
    "model",
    "attention",
    "objective",
    "optimizer",
    "scheduler",
    "metric",
    "data",
    "cleaner",
    "callback",
)


class PartOptions(BaseModel):
    """Base of every part's options model: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def resolve(ref: Any) -> Any:
    """Import a "module:attribute" reference; any other object is returned as it is."""
    if not isinstance(ref, str):
        return ref
    module_name, _, attribute = ref.partition(":")
    obj = importlib.import_module(module_name)
    for name in attribute.split(".") if attribute else ():
        obj = getattr(obj, name)
    return obj


@dataclass(frozen=True)
class PartSpec:
    """One named part of one stage, as a plugin registers it (see ``hookformer_parts``).

    ``factory`` and ``options`` are objects or "module:attribute" strings; strings keep registration free of heavy
    imports. The factory is called as ``factory(options, ctx)`` with the validated options model instance and the
    :class:`BuildContext` of the run, and returns the built part (see the protocols below).
    ``capabilities`` is free-form data shown by ``hookformer plugins show`` (attention kernels declare theirs).
    ``override=True`` lets this part replace a part of the same stage and name from another distribution; the
    replacement is logged. Without it, such a clash is an error.
    """

    stage: str
    name: str
    description: str
    factory: Any
    options: Any = PartOptions
    capabilities: Any = None
    priority: int = 0
    override: bool = False

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r} for part {self.name!r}; stages are: {', '.join(STAGES)}")

    def options_model(self) -> type[PartOptions]:
        return resolve(self.options)

    def build(self, options: BaseModel, ctx: "BuildContext") -> Any:
        return resolve(self.factory)(options, ctx)


@dataclass
class BuildContext:
    """What a factory may use to build its part. Fields are filled in stage order as the run is assembled:
    data -> tokenizer -> attention -> model -> objective -> optimizer -> scheduler -> metrics -> callbacks."""

    run_dir: Path
    catalog: Any = None  # the registry Catalog the run was composed from
    device: str = "cpu"
    seed: int = 0
    train: Any = None  # the validated ``train`` section (TrainConfig)
    cleaners: list = field(default_factory=list)  # the built ``cleaning`` chain, in config order
    data: "DataSource | None" = None
    tokenizer: "Tokenizer | None" = None
    label_names: list[str] | None = None  # class names of a labeled data source, index = class id; else None
    block_size: int | None = None
    attention: "AttentionKernel | None" = None
    model: Any = None  # torch.nn.Module
    optimizer: Any = None  # torch.optim.Optimizer
    total_steps: int | None = None


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of the special tokens. Every tokenizer has pad, bos, eos and unk; mask, cls and sep are reserved."""

    pad: int
    bos: int
    eos: int
    unk: int
    mask: int
    cls: int
    sep: int

    def ids(self) -> set[int]:
        return {self.pad, self.bos, self.eos, self.unk, self.mask, self.cls, self.sep}


@runtime_checkable
class Tokenizer(Protocol):
    """Stage ``tokenizer``. Text <-> ids, exact round trip for any UTF-8 text."""

    vocab_size: int
    special: SpecialTokens

    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def fingerprint(self) -> str:
        """A stable string that changes whenever the mapping text -> ids changes (data caches are keyed by it)."""
        ...


@runtime_checkable
class AttentionKernel(Protocol):
    """Stage ``attention``. q: (B, H, T_q, D), k and v: (B, H, T_k, D) -> (B, H, T_q, D).

    ``key_padding_mask`` is a bool tensor (B, T_k), True where the key is a real token. With ``causal`` and
    T_q != T_k the causal diagonal is aligned to the end (query i sees keys up to i + T_k - T_q).
    ``scale`` defaults to 1 / sqrt(D). ``dropout_p`` applies to the attention weights.
    """

    def __call__(self, q, k, v, *, causal: bool = False, key_padding_mask=None, dropout_p: float = 0.0,
                 scale: float | None = None): ...


@dataclass
class ObjectiveResult:
    """What an objective returns for one micro-batch.

    ``loss_sum`` is the loss summed over ``num_items`` items (tokens, sequences, ...), never a mean: the engine divides
    the accumulated gradient by the total item count, so gradient accumulation equals one large batch exactly.
    ``logits`` and ``targets`` (with ignored positions set to ``ignore_index``) are given to the metrics.
    """

    loss_sum: Any  # scalar tensor
    num_items: int
    logits: Any = None
    targets: Any = None
    ignore_index: int = -100


class Objective(Protocol):
    """Stage ``objective``: ``objective(model, batch) -> ObjectiveResult``. ``batch`` is a dict of tensors with at
    least ``input_ids`` (B, T); the data stage may add ``attention_mask`` and other fields."""

    def __call__(self, model, batch: dict) -> ObjectiveResult: ...


class Metric(Protocol):
    """Stage ``metric``: accumulates over evaluation batches, then reports named values."""

    def reset(self) -> None: ...

    def update(self, result: ObjectiveResult) -> None: ...

    def compute(self) -> dict[str, float]: ...


class DataSource(Protocol):
    """Stage ``data``. Reads the corpus, hands raw training text to tokenizer training, then tokenizes and packs.

    ``texts()`` yields raw training documents (used to train a tokenizer that has no model file yet; validation
    documents are never in it).
    ``prepare(tokenizer)`` returns ``{"train": LongTensor (N, block_size), "validation": LongTensor (M, block_size)}``:
    packed blocks of token ids with the tokenizer's end-of-document token after each document.
    ``report`` is a dict of what was read, replaced and dropped (it is written to the run directory).
    """

    block_size: int
    report: dict

    def texts(self) -> Iterator[str]: ...

    def prepare(self, tokenizer: Tokenizer) -> dict: ...


class Cleaner(Protocol):
    """Stage ``cleaner``: one step of the ``cleaning`` chain, applied to the documents in the order the config lists
    the steps, before tokenization.

    ``__call__(texts)`` takes a batch of documents and returns a list of the same length: each document's cleaned
    text, or ``None`` where the document is removed. A step that keeps state across batches (deduplication) sets
    ``stateful = True``: the chain then runs it in one process, over the documents in their order; a stateless step
    may run in several processes. ``fingerprint()`` is a stable string of what the step does (its options), part
    of the data cache key.
    """

    stateful: bool

    def __call__(self, texts: list[str]) -> list[str | None]: ...

    def fingerprint(self) -> str: ...


class Callback(Protocol):
    """Stage ``callback``: observes the run. Every method is optional; define the ones you need.

    ``on_run_start(run)``, ``on_step_end(run, record)``, ``on_eval_end(run, record)``,
    ``on_checkpoint_saved(run, path)``, ``on_run_end(run)``. ``run`` is the :class:`hookformer.core.loop.Run`;
    ``record`` the dict written to ``metrics.jsonl``.
    """
