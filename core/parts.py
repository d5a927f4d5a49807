"""What a part is: the spec a plugin returns for registration, and the protocol each stage's built part follows.

Nothing here imports torch: specs are declarative, so listing parts stays cheap. Heavy modules are imported only when
a part is built, through the ``factory`` reference ("module:attribute").
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

#: The stages of a run. A config has one section per stage (``metrics``, ``hooks`` and ``cleaning`` are lists).
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
    "hook",
    "family",  # Hugging Face model families: how `hookformer import`/`export` map configs and weights
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


@dataclass(frozen=True)
class Shapes:
    """The sizes that decide a model's weight shapes, negotiated by the engine and stored in every checkpoint's
    manifest, so that a run is rebuilt with the same shapes whatever data it is later given.

    ``vocab_size``: the ids the language-model head scores (the tokenizer's ``vocab_size`` in a new run).
    ``max_seq_len``: the longest input (the data's ``block_size`` in a new run). When the run starts from a checkpoint
    (resume, ``train.init_from``, ``evaluate``, ``generate``) both come from that checkpoint's manifest. A model part
    takes them unless its own options fix them, and declares what it got as ``Model.vocab_size`` / ``max_seq_len``.
    """

    vocab_size: int | None = None
    max_seq_len: int | None = None

    def to_dict(self) -> dict:
        return {"vocab_size": self.vocab_size, "max_seq_len": self.max_seq_len}


@dataclass(frozen=True)
class BuildContext:
    """What a factory may use to build its part: read-only, given by the engine (:class:`hookformer.core.assemble.
    Assembly`). The parts of the stages a part depends on are built before it, in this order: hooks -> cleaning
    steps -> data -> tokenizer -> attention -> model -> objective -> optimizer -> scheduler -> metrics. A field of a
    stage that this run does not build is None (``generate`` builds no data: a tokenizer then reloads its saved files
    from ``run_dir`` or ``init_from``).

    ``build(stage, value, section)`` builds a nested part (a part whose options name other parts, like objective
    ``combined``) the way the engine builds every part: resolved in the run's catalog, validated, and passed through
    the build wrappers of the run's hook parts.
    """

    run_dir: Path
    device: str = "cpu"
    seed: int = 0
    train: Any = None  # the validated ``train`` section (TrainConfig)
    total_steps: int | None = None
    init_from: Path | None = None  # the checkpoint a fine-tuning run starts from; parts may reuse its run's files
    cleaners: tuple = ()  # the built ``cleaning`` steps, in config order (see hookformer.core.cleaning)
    data: "DataSource | None" = None
    tokenizer: "Tokenizer | None" = None
    label_names: tuple[str, ...] | None = None  # class names of labeled data (index = label id), from the data part
    shapes: Shapes = Shapes()
    attention: "AttentionKernel | None" = None
    model: Any = None  # torch.nn.Module
    param_groups: tuple = ()  # the optimizer's parameter groups, see :func:`hookformer.core.params.param_groups`
    optimizer: Any = None  # torch.optim.Optimizer
    catalog: Any = None  # the run's registry Catalog: ``catalog.names(stage)``, ``catalog.get(stage, name)``
    builder: Any = field(default=None, repr=False)  # see ``build``

    def build(self, stage: str, value: Any, section: str) -> Any:
        """The part ``value`` (a part name, or a mapping with ``name`` and options) of ``stage``, resolved in
        ``catalog`` and built in this context; ``section`` names it in errors and for build wrappers (e.g.
        ``objective.objectives.0``)."""
        if self.builder is not None:
            return self.builder(stage, value, section, self)
        # A context made by hand (a test, a conformance kit): no run, so no hook parts to wrap the build.
        from hookformer.core.config import resolve_part

        return resolve_part(section, stage, value, self.catalog).build(self)


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
    """Stage ``tokenizer``. Text <-> ids, exact round trip for any UTF-8 text.

    Lifecycle (a tokenizer with state, e.g. a trained vocabulary, follows it; one without, like ``byte``, ignores
    it): the factory looks for its files under ``ctx.run_dir / "tokenizer"`` first (a resumed run, ``evaluate`` and
    ``generate`` rebuild the run's own tokenizer from there), then under ``ctx.init_from / "tokenizer"`` (a
    fine-tuning run keeps the pretrained run's ids, and copies the files into its own run directory). Only when
    neither exists does it train, on ``ctx.data.texts()`` (the training split, never validation); it then saves its
    files under ``ctx.run_dir / "tokenizer"`` before returning, so every later rebuild reloads the same mapping.
    ``ctx.data`` is None where a command builds no data (``generate``): the files must exist then. Under torchrun
    rank 0 builds it first; the other ranks then reload it.
    """

    vocab_size: int
    special: SpecialTokens

    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def fingerprint(self) -> str:
        """A stable string that changes whenever the mapping text -> ids changes (data caches are keyed by it)."""
        ...

    # Optional: ``encode_with_offsets(text) -> (ids, offsets)``, ``offsets[i] = (start, end)`` the characters of
    # ``text`` that token i covers (end exclusive; a token made of part of a character's bytes covers that
    # character). Parts that map tokens back onto the text (whole-word masking over segmented words, extractive
    # question answering) need it and refuse a tokenizer without it.


@runtime_checkable
class AttentionKernel(Protocol):
    """Stage ``attention``. q: (B, H, T_q, D), k and v: (B, H, T_k, D) -> (B, H, T_q, D).

    ``key_padding_mask`` is a bool tensor (B, T_k), True where the key is a real token. With ``causal`` and
    T_q != T_k the causal diagonal is aligned to the end (query i sees keys up to i + T_k - T_q).
    ``scale`` defaults to 1 / sqrt(D). ``dropout_p`` applies to the attention weights.
    A kernel whose capabilities declare ``document_mask`` is also called with ``document_ids`` (B, T_k): the document
    each key belongs to inside a packed block (queries are the last T_q keys); attention then stays inside a document.
    """

    def __call__(self, q, k, v, *, causal: bool = False, key_padding_mask=None, dropout_p: float = 0.0,
                 scale: float | None = None): ...


@dataclass
class ObjectiveResult:
    """What an objective returns for one micro-batch.

    ``loss_sum`` is the loss summed over ``num_items`` items (tokens, sequences, ...), never a mean: the engine divides
    the accumulated gradient by the total item count, so gradient accumulation equals one large batch exactly.
    ``logits`` and ``targets`` (with ignored positions set to ``ignore_index``) are given to the metrics.
    A result made of parts (objective ``combined``) may also carry ``parts``, ``{name: ObjectiveResult}``; the
    ``loss`` metric then reports each part's mean loss too, as ``loss_<name>``.
    """

    loss_sum: Any  # scalar tensor
    num_items: int
    logits: Any = None
    targets: Any = None
    ignore_index: int = -100
    #: Text-level results, for metrics that score texts (BLEU, ROUGE, exact match on answers): one predicted text
    #: per example, and the reference texts it is scored against (one or more per example). None when the
    #: objective (or the evaluation's generation) produced no texts.
    predictions: list[str] | None = None
    references: list[list[str]] | None = None


class Objective(Protocol):
    """Stage ``objective``: ``objective(model, batch) -> ObjectiveResult``. ``batch`` is a dict of tensors with at
    least ``input_ids`` (B, T); the data stage may add ``attention_mask`` and other fields (see
    :data:`MODEL_INPUTS`; pass them to the model with :func:`model_inputs`).

    An objective that needs a task head attaches it to the model when it is built (``ctx.model.add_head``, see
    :class:`Model`), so the head is trained, checkpointed and loaded with the rest of the model.

    Optional: ``baseline(train, validation) -> dict[str, float]``, the scores of a model that ignores the input (the
    unigram loss for language modeling, the majority class for classification), given the examples tables (or the
    training stream) of the run. Keys ending in ``_val_loss`` are drawn as baselines in the loss curve.

    Optional: ``loss_unit``, what one of ``num_items`` is, for labels such as the loss curve's axis ("token" when
    left out; "example", "pair", "sentence"...).

    Optional, the shared-forward extension, which lets objectives that are combined (objective ``combined``) train
    from one forward pass:

    - ``heads``: the names of the model outputs it reads (``"lm"``, ``"hidden"``, its task head...);
    - ``transform(batch, training) -> batch`` (may be left out: no change): corrupt the inputs before the forward
      pass, e.g. MLM masking. It returns a new dict; it may replace ``input_ids`` and add fields for its ``score``,
      named after the objective (``mlm_targets``). ``training`` is ``model.training`` (evaluation may draw fixed
      corruptions);
    - ``score(outputs, batch) -> ObjectiveResult``: the result from ``outputs``, the dict of one forward pass over
      the transformed batch with at least ``heads`` (``model(input_ids, **model_inputs(batch), heads=...)``).

    The engine runs every objective through :func:`hookformer.core.objective.compute`: an objective with the
    extension needs no ``__call__`` (``score(model(transform(batch), heads), transform(batch))``), one without it is
    called as ``objective(model, batch)``. Combined, the transforms apply in order to one batch, the model runs once
    for every head asked for, and each part scores the outputs; an objective without the extension still combines,
    with a forward pass of its own.

    ``score`` may take a third argument, ``training`` (bool): the engine then says whether the model is training, so
    that a training-only change (label smoothing) never reaches ``val_loss`` and the metrics.
    """

    def __call__(self, model, batch: dict) -> ObjectiveResult: ...


#: Batch fields that are model inputs besides ``input_ids``: ``attention_mask`` (B, T) 1 on real tokens,
#: ``token_type_ids`` (B, T) segment ids, ``document_ids`` (B, T) the document each token of a packed block comes
#: from (attention then stays inside a document); for an encoder-decoder, whose ``input_ids`` and ``attention_mask``
#: are the source, ``decoder_input_ids`` (B, T_dec) the teacher-forced target (starting with bos) and
#: ``decoder_attention_mask`` (B, T_dec) 1 on its real tokens.
MODEL_INPUTS = ("attention_mask", "token_type_ids", "document_ids", "decoder_input_ids", "decoder_attention_mask")


def model_inputs(batch: dict) -> dict:
    """The keyword arguments of a model call for ``batch``: the :data:`MODEL_INPUTS` fields it has."""
    return {name: batch[name] for name in MODEL_INPUTS if name in batch}


class Model(Protocol):
    """Stage ``model``: a ``torch.nn.Module``.

    ``model(input_ids, attention_mask=None, *, token_type_ids=None, document_ids=None, heads=None)``: with
    ``heads=None`` it returns the language-model logits (B, T, vocab). With a list of head names it returns a dict
    ``{name: output}``: ``"hidden"`` is the final hidden states (B, T, d_model), ``"lm"`` the logits, any other
    name a head attached with ``add_head``. One forward pass computes every head asked for, so objectives that are
    combined share it. A model may leave out inputs it does not support, and must then refuse them.

    ``add_head(name, module)`` attaches a task head: ``module(hidden, attention_mask) -> Tensor``; its parameters
    are named ``heads.<name>.*`` (the engine trains them at ``train.head_lr`` and loads pretrained weights without
    them). ``d_model`` is the width of the hidden states; ``vocab_size`` and ``max_seq_len`` the shapes it was built
    for (see :class:`Shapes`: the engine stores them in every checkpoint's manifest and refuses data whose sequences
    are longer than ``max_seq_len``).

    Optional (older models keep working without it): ``causal``, whether a position sees only the positions before
    it (true when left out; text generation and the end-of-run samples need a decoder), see :func:`is_decoder`.

    Optional, incremental decoding: ``new_cache()`` returns an empty KV cache, with ``cache.length`` (the tokens
    cached so far) and ``cache.reorder(index)`` (keep the batch rows ``index``, a LongTensor, in that order, in place:
    beam search, dropping finished rows). ``model(input_ids, attention_mask, cache=cache)`` then takes only the
    new tokens (B, t_new), with ``attention_mask`` (B, cache.length + t_new) covering every token so far (0 on left
    padding); their positions continue from ``cache.length`` (the index in the whole sequence, as a forward pass
    over it would give), their keys and values are appended to the cache, and the logits of the new tokens
    (B, t_new, vocab) are returned: the same as the uncached forward pass over the whole sequence.

    Optional, encoder-decoders: ``encoder_decoder`` is true (false when left out). Such a model is ``causal`` (its
    decoder writes the target left to right) and is called as ``model(input_ids, attention_mask, *,
    decoder_input_ids, decoder_attention_mask=None, heads=None, cache=None, encoder_hidden=None)``: the source and
    its padding mask, the target; it returns the decoder's logits (B, T_dec, vocab), or with ``heads`` also
    ``"hidden"`` (the decoder's hidden states) and ``"encoder_hidden"``. ``model.encode(input_ids, attention_mask)``
    gives the encoder's hidden states, which ``encoder_hidden`` takes instead of running the encoder again. With a
    cache, the decoder ids are the new target tokens; the first call keeps the source's cross-attention keys and
    values (and its padding mask) in the cache, so later calls may leave the source out. ``max_seq_len`` bounds the
    source and the target. A model that reads one sequence refuses ``decoder_input_ids``.
    """

    d_model: int
    vocab_size: int
    max_seq_len: int

    def add_head(self, name: str, module) -> None: ...


def is_decoder(model) -> bool:
    """Whether ``model`` generates text left to right (``Model.causal``, true when the model does not say)."""
    return getattr(model, "causal", True)


class Metric(Protocol):
    """Stage ``metric``: accumulates over evaluation batches, then reports named values."""

    def reset(self) -> None: ...

    def update(self, result: ObjectiveResult) -> None: ...

    def compute(self) -> dict[str, float]: ...


class BatchStream(Protocol):
    """Training batches in a resumable order. ``next_batch(n)`` returns the next ``n`` examples as a dict of tensors
    (the same fields as an examples table); ``state_dict()`` is saved in every checkpoint and ``load_state_dict``
    continues exactly where it was taken, so a resumed run sees the batches the uninterrupted run would have seen."""

    def next_batch(self, batch_size: int) -> dict: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class DataSource(Protocol):
    """Stage ``data``. Reads the corpus, hands raw training text to tokenizer training, then tokenizes and packs.

    ``texts()`` yields raw training documents (used to train a tokenizer that has no model file yet; validation
    documents are never in it).
    ``prepare(tokenizer)`` returns ``{"train": ..., "validation": ...}``. Each split is an *examples table*: a dict
    of tensors with the same first dimension, at least ``input_ids`` (N, T) (a bare tensor is taken as
    ``{"input_ids": tensor}``); the engine draws training batches from the table in a seeded, resumable order. The
    training split may instead be a :class:`BatchStream` (streaming sources). Packed language-modeling data holds
    blocks of ``block_size`` token ids with the tokenizer's end-of-document token after each document; labeled data
    adds ``attention_mask``, ``labels`` and other fields its objective reads.
    ``report`` is a dict of what was read, replaced and dropped (it is written to the run directory).
    Optional: ``label_names``, the class names of labeled data (index = label id), given to metrics and heads.

    Optional: ``applies_cleaning = True`` declares that the source passes its documents through the run's cleaning
    steps (``ctx.cleaners``, with :class:`hookformer.core.cleaning.CleaningChain`). The engine refuses a non-empty
    ``cleaning:`` section for a source that does not declare it, instead of training on uncleaned text.
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
    of the data cache key. Optional: ``name``, how the data report labels the step (default: its class name); and,
    for a stateful step, ``state_dict()`` / ``load_state_dict()``, which a streamed run needs to checkpoint it.
    """

    stateful: bool

    def __call__(self, texts: list[str]) -> list[str | None]: ...

    def fingerprint(self) -> str: ...


class Optimizer(Protocol):
    """Stage ``optimizer``: a ``torch.optim.Optimizer`` over ``ctx.param_groups``.

    The engine builds the parameter groups (:func:`hookformer.core.params.param_groups`): trainable parameters
    only, each once, split into groups with ``"decay": True`` (weights of linear layers) and ``False`` (norms,
    biases, embeddings), and, with ``train.head_lr``, the task heads' groups with their own ``"lr"``. A factory
    gives each group its weight decay (:func:`hookformer.core.params.with_weight_decay`) and passes the groups to
    the optimizer. The engine checks the built optimizer: every trainable parameter once, and the heads' learning
    rate when ``train.head_lr`` is set. ``step()``, ``zero_grad()``, ``state_dict()`` / ``load_state_dict()`` (saved
    in every checkpoint) as in torch.
    """

    param_groups: list[dict]

    def step(self) -> None: ...

    def zero_grad(self, set_to_none: bool = True) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class Scheduler(Protocol):
    """Stage ``scheduler``: the learning rate over the run, built over ``ctx.optimizer`` for ``ctx.total_steps``
    optimizer steps. ``step()`` is called once after every optimizer step; ``get_last_lr()`` gives each group's
    current rate (the first is logged as ``lr``); ``state_dict()`` / ``load_state_dict()`` are saved in every
    checkpoint. A ``torch.optim.lr_scheduler.LRScheduler`` (e.g. ``LambdaLR``) follows it."""

    def step(self) -> None: ...

    def get_last_lr(self) -> list[float]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@dataclass(frozen=True)
class RunView:
    """What a run event (see hookformer.core.hookspecs) is given about the run: read-only values of the moment.

    ``step``: optimizer steps taken; ``config``: the resolved config as plain data (what ``config.yaml`` holds; a
    copy); ``run_dir``: the run directory; ``model``: the model being trained (the plain module, not a distributed
    or compiled wrapper); ``loss_unit``: what the objective's loss is averaged over (see Objective); ``log``: print a
    line to the run's log (above the progress bar)."""

    step: int
    config: dict
    run_dir: Path
    model: Any
    loss_unit: str
    log: Callable[[str], None]
