"""The run config: one section per stage (a part name plus that part's options) and ``train`` for the loop.

Path from the command line to a validated config: built-in default recipe <- the pretrained run's tokenizer, model
and attention sections (fine-tuning, ``train.init_from``) <- YAML file <- ``--set`` overrides -> resolve every part
name in the catalog -> validate every section against its part's options model. All problems are collected and
reported at once, each with its field path, before anything heavy is built.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hookformer.core.errors import ConfigError, PluginError
from hookformer.core.parts import PartOptions

#: Config sections that hold one part, and the stage each names a part of.
PART_SECTIONS = {
    "tokenizer": "tokenizer",
    "model": "model",
    "attention": "attention",
    "objective": "objective",
    "optimizer": "optimizer",
    "scheduler": "scheduler",
    "data": "data",
}
#: Config sections that hold a list of parts.
LIST_SECTIONS = {"hooks": "hook", "metrics": "metric", "cleaning": "cleaner"}
#: Old names of sections, read as the new ones (run directories saved before the rename keep working).
RENAMED_SECTIONS = {"callbacks": "hooks"}
SECTIONS = (*PART_SECTIONS, *LIST_SECTIONS, "train")
#: The sections a fine-tuning run takes from the pretrained run it starts from (train.init_from), as defaults that its
#: own config and ``--set`` override: together they decide the shapes of the pretrained weights.
PRETRAINED_SECTIONS = ("tokenizer", "model", "attention")
#: The key of a config (default_run.yaml has one) whose sections replace the config's own for a run from pretrained
#: weights (``train.init_from``, an imported run).
FINE_TUNING = "fine_tuning"


class DistributedConfig(BaseModel):
    """``train.distributed``: how ranks started by torchrun share the work (ignored by a single process)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    strategy: Literal["none", "ddp", "fsdp"] = Field(
        "none", description="ddp: DistributedDataParallel; fsdp: FSDP2 (fully_shard), weights, gradients and "
        "optimizer state sharded over the ranks")
    timeout_s: float = Field(300.0, gt=0, description="seconds a collective waits for the other ranks before the "
                             "job fails (a dead or stuck rank)")


class EarlyStoppingConfig(BaseModel):
    """``train.early_stopping``: stop when an evaluation value stops improving, and keep the best weights."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    metric: str = Field("val_accuracy", description="the evaluation value to watch, as written to metrics.jsonl "
                        "(e.g. val_accuracy, val_loss)")
    mode: Literal["max", "min"] = Field("max", description="max: higher is better; min: lower is better")
    patience: int = Field(3, gt=0, description="stop after this many evaluations in a row without improvement")
    min_delta: float = Field(0.0, ge=0.0, description="an improvement smaller than this does not count")


class TrainConfig(BaseModel):
    """The ``train`` section: the loop itself."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_steps: int = Field(1000, gt=0, description="optimizer steps to run")
    batch_size: int = Field(16, gt=0, description="sequences per micro-batch on each rank (global batch: "
                            "batch_size x ranks x grad_accum_steps)")
    grad_accum_steps: int = Field(1, gt=0, description="micro-batches per optimizer step")
    order: Literal["shuffled", "streams"] = Field(
        "shuffled", description="the order of the training examples: shuffled, a seeded permutation per epoch; "
        "streams, consecutive segments of batch_size x ranks contiguous streams (row i of every micro-batch continues "
        "row i of the one before), as segment recurrence (a model memory_length) needs. streams needs map-style "
        "data and reads only its input_ids")
    seed: int = Field(1337, ge=0, lt=2**32, description="seed for weights, data order, dropout and sampling")
    eval_every: int = Field(200, gt=0, description="evaluate every N steps (and at the end)")
    eval_batches: int = Field(20, gt=0, description="validation batches per evaluation")
    log_every: int = Field(10, gt=0, description="write a training record every N steps")
    clip_grad_norm: float | None = Field(1.0, gt=0, description="max global gradient norm; null disables clipping")
    bf16: bool = Field(False, description="bfloat16 autocast for forward and loss")
    compile: bool = Field(False, description="train through torch.compile (static shapes, compiled once before the "
                          "first step: tens of seconds on a CPU); evaluation, sampling and checkpoints use the "
                          "uncompiled model")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto picks cuda when available")
    checkpoint_every: int = Field(500, gt=0, description="save a checkpoint every N steps (and at the end)")
    keep_checkpoints: int = Field(2, gt=0, description="how many recent checkpoints to keep")
    checkpoint_on_interrupt: bool = Field(True, description="on SIGTERM or Ctrl-C, finish the current step and save "
                                          "a checkpoint before stopping")
    progress: bool = Field(True, description="show a progress bar")
    sample_prompt: str = Field("", description="prompt for the samples generated at the end")
    sample_tokens: int = Field(200, ge=0, description="tokens per generated sample (0: no samples)")
    sample_temperature: float = Field(0.8, gt=0)
    sample_top_k: int | None = Field(40, gt=0)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    init_from: str | None = Field(
        None, description="fine-tune a pretrained run: its directory (its latest checkpoint), one of its "
        "checkpoint directories, or a Hugging Face model directory (imported as `hookformer import` does). Its "
        "tokenizer, model and attention sections are the defaults of this config, its "
        "tokenizer file is reused, and its weights are loaded (task heads it lacks keep their fresh weights)")
    freeze_backbone: bool = Field(False, description="train only the task heads (parameters named heads.*); the "
                                  "rest of the model keeps its weights")
    head_lr: float | None = Field(None, gt=0, description="peak learning rate of the task heads (heads.*); null: the "
                                  "optimizer's lr. The schedule scales both")
    early_stopping: EarlyStoppingConfig | None = Field(
        None, description="stop when an evaluation value stops improving; the best evaluation's checkpoint is kept "
        "(checkpoints/best) and its weights are restored at the end")


@dataclass
class PartChoice:
    """A config section resolved to a registered part and its validated options."""

    section: str
    stage: str
    name: str
    options: BaseModel
    entry: Any  # registry CatalogEntry

    def build(self, ctx):
        return self.entry.build(self.options, ctx)

    def dump(self) -> dict:
        return {"name": self.name, **self.options.model_dump(mode="json")}


@dataclass
class RunConfig:
    parts: dict[str, PartChoice]
    metrics: list[PartChoice]
    hooks: list[PartChoice]
    train: TrainConfig
    catalog: Any = None
    cleaning: list[PartChoice] = field(default_factory=list)

    def dump(self) -> dict:
        """The resolved config, every default filled in: what ``config.yaml`` in the run directory holds."""
        out: dict[str, Any] = {section: choice.dump() for section, choice in self.parts.items()}
        out["metrics"] = [choice.dump() for choice in self.metrics]
        out["hooks"] = [choice.dump() for choice in self.hooks]
        out["cleaning"] = [choice.dump() for choice in self.cleaning]
        out["train"] = self.train.model_dump(mode="json")
        return out


class _Loader(yaml.SafeLoader):
    """YAML as people write numbers: ``3e-4`` and ``1e5`` are floats (YAML 1.2), not the strings YAML 1.1 makes
    of them (which strict validation would then refuse)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str) -> Any:
    """Parse config YAML (safe: plain data only)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def validate_options(model: type[BaseModel], options: dict, context: dict | None = None) -> BaseModel:
    """``options`` validated by a part's options ``model`` strictly, as the JSON data a config is: integers are
    numbers and lists are tuples, but a string is never a number and a boolean never an integer
    (``window: true`` is an error, not ``window=1``). Nested parts' options are validated the same way."""
    return model.model_validate_json(json.dumps(options, default=str), strict=True, context=context)


def _default_run_file() -> dict:
    text = resources.files("hookformer.plugins").joinpath("default_run.yaml").read_text(encoding="utf-8")
    return load_yaml(text)


def for_pretrained_weights(config: dict, pretrained: bool) -> dict:
    """``config`` without its :data:`FINE_TUNING` key, whose sections replace its own when the run starts from
    pretrained weights (``pretrained``: ``train.init_from``, an imported run)."""
    config = dict(config)
    sections = config.pop(FINE_TUNING, None)
    if sections is not None and not isinstance(sections, dict):
        raise ConfigError(f"{FINE_TUNING}: must hold a mapping of sections (e.g. optimizer:, scheduler:) that a run "
                          f"from pretrained weights uses instead, not a {type(sections).__name__}.")
    return merge(config, sections) if pretrained and sections else config


def default_recipe() -> dict:
    """The built-in default run (``hookformer train`` with no config)."""
    return for_pretrained_weights(_default_run_file(), pretrained=False)


def fine_tuning_recipe() -> dict:
    """What a run that starts from pretrained weights (``train.init_from``, an imported run) is composed over: the
    default recipe with its ``fine_tuning:`` sections in place of its own (an optimizer for pretrained weights)."""
    return for_pretrained_weights(_default_run_file(), pretrained=True)


def recipes() -> list[str]:
    """Names of the built-in recipes: the configs shipped in hookformer.plugins (``NAME.yaml``)."""
    folder = resources.files("hookformer.plugins")
    return sorted(entry.name.removesuffix(".yaml") for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def config_file(path: Path) -> Path:
    """The CONFIG of the command line: a YAML file, or else the name of a built-in recipe (see :func:`recipes`)."""
    if not Path(path).exists() and str(path) in recipes():
        return Path(str(resources.files("hookformer.plugins").joinpath(f"{path}.yaml")))
    return Path(path)


def read_yaml(path: Path) -> dict:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.object[exc.start]:#x} at offset "
                          f"{exc.start}); save it as UTF-8.") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}. Check the path (or name a built-in "
                          f"recipe: {', '.join(recipes())}).") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        raise ConfigError(f"config file {where} is not valid YAML: {getattr(exc, 'problem', exc)}.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections ({', '.join(SECTIONS)}), "
                          f"not a {type(data).__name__}.")
    return data


def merge(base: dict, update: dict) -> dict:
    """Deep-merge ``update`` into a copy of ``base``. A part section whose ``name`` changes is replaced, not merged,
    so options of the previous part do not leak into the new one."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        current = out.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            if "name" in value and value["name"] != current.get("name"):
                out[key] = copy.deepcopy(value)
            else:
                out[key] = merge(current, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_override(raw: dict, assignment: str) -> dict:
    """Apply one ``--set a.b.c=value`` (the value is parsed as YAML: numbers, booleans, lists, null)."""
    path, sep, text = assignment.partition("=")
    if not sep or not path.strip():
        raise ConfigError(f'--set expects KEY.PATH=VALUE (e.g. --set optimizer.lr=3e-4), got "{assignment}".')
    try:
        value = load_yaml(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    keys = path.strip().split(".")
    update: Any = value
    for key in reversed(keys):
        update = {key: update}
    return merge(raw, update)


def compose(config_path: Path | None, overrides: list[str]) -> dict:
    """The raw config dict: default recipe (fine-tuning: :func:`fine_tuning_recipe`, then the pretrained run's
    :data:`PRETRAINED_SECTIONS`), then the YAML file (or built-in recipe), then ``--set`` overrides."""
    own = read_yaml(config_file(config_path)) if config_path is not None else {}

    def layered(base: dict, pretrained: bool = False) -> dict:
        raw = merge(base, for_pretrained_weights(own, pretrained))
        for assignment in overrides:
            raw = apply_override(raw, assignment)
        return raw

    raw = layered(default_recipe())
    init_from = raw["train"].get("init_from") if isinstance(raw.get("train"), dict) else None
    if not isinstance(init_from, str):  # validation reports a value of the wrong type
        return raw
    if is_hf_model_dir(init_from):  # the sections of the run `hookformer import` makes of it (see Run)
        from hookformer.core.interop import hf_run_config
        from hookformer.registry.catalog import Catalog

        # Dumped, every option filled in as a run's config.yaml has it, so the default recipe's model options (RoPE,
        # QK-norm, ...) cannot leak into a model config.json describes.
        catalog = Catalog.load()
        imported = validate(hf_run_config(Path(init_from).expanduser(), catalog), catalog).dump()
        return layered(merge(fine_tuning_recipe(), {name: imported[name] for name in PRETRAINED_SECTIONS
                                                    if name in imported}), pretrained=True)
    return layered(merge(fine_tuning_recipe(), pretrained_sections(pretrained_run_dir(init_from))), pretrained=True)


def is_hf_model_dir(path: str | Path) -> bool:
    """Whether ``train.init_from`` names a Hugging Face model directory (a config.json) rather than a run (a
    config.yaml); a run imports it first (see hookformer.core.interop)."""
    path = Path(path).expanduser()
    return (path / "config.json").is_file() and not (path / "config.yaml").is_file()


def pretrained_run_dir(init_from: str | Path) -> Path:
    """The run directory named by ``train.init_from``: the path itself, or the run of a checkpoint directory
    (RUN_DIR/checkpoints/step_N)."""
    path = Path(init_from).expanduser()
    if (path / "config.yaml").is_file():
        return path
    if path.parent.name == "checkpoints" and (path.parent.parent / "config.yaml").is_file():
        return path.parent.parent
    raise ConfigError(f"train.init_from: {path} is neither a run directory (it has no config.yaml) nor a checkpoint "
                      f"directory of one (RUN_DIR/checkpoints/step_N). Name the pretrained run's directory.")


def pretrained_sections(run_dir: Path) -> dict:
    """The :data:`PRETRAINED_SECTIONS` of a run's saved config. (The sizes the pretrained weights were built for
    come from its checkpoint's manifest: see :class:`hookformer.core.parts.Shapes`.)"""
    saved = read_yaml(run_dir / "config.yaml")
    return {name: saved[name] for name in PRETRAINED_SECTIONS if isinstance(saved.get(name), dict)}


def _error_lines(prefix: str, exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in (prefix, *err["loc"]) if part != "")
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown option"
        if "input" in err and err["type"] != "missing" and not isinstance(err["input"], dict):
            msg += f" (got {err['input']!r})"
        lines.append(f"{loc}: {msg}")
    return lines


def catalog_of(context: dict | None, field: str):
    """The run's catalog, from the validation context that the engine gives every options model
    (``model_validate(..., context={"catalog": catalog})``). An options model that names nested parts (e.g. objective
    ``combined``) resolves them in it, so that they honour ``-p`` / ``--no-autoload`` like the run's own parts."""
    catalog = (context or {}).get("catalog")
    if catalog is None:
        raise ConfigError(f"{field}: names other parts, so it must be validated with the run's catalog: "
                          f'model_validate(..., context={{"catalog": catalog}}).')
    return catalog


def resolve_part(section: str, stage: str, value: Any, catalog) -> PartChoice:
    """The part ``value`` (a name, or a mapping with ``name`` and options) of ``stage`` resolved in ``catalog`` with
    validated options; a ConfigError naming ``section`` otherwise. Used for every section of a run, and for nested
    parts (:meth:`hookformer.core.parts.BuildContext.build`)."""
    errors: list[str] = []
    choice = _resolve_part(section, stage, value, catalog, errors)
    if choice is None:
        raise ConfigError("invalid config: " + "; ".join(e.rstrip(".") for e in errors) + ".")
    return choice


def _resolve_part(section: str, stage: str, value: Any, catalog, errors: list[str]) -> PartChoice | None:
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        errors.append(f"{section}: expected a mapping with a part name (name: ...) or a part name, "
                      f"got {type(value).__name__}")
        return None
    options = dict(value)
    name = options.pop("name", None)
    if not isinstance(name, str) or not name:
        errors.append(f"{section}.name: missing; choose one of: {', '.join(catalog.names(stage))}")
        return None
    try:
        entry = catalog.get(stage, name)
    except PluginError as exc:
        errors.append(f"{section}.name: {exc}")
        return None
    try:
        model: type[PartOptions] = entry.options_model()
    except PluginError as exc:
        errors.append(f"{section}: {exc}")
        return None
    try:  # the context lets options that name nested parts (e.g. combined objectives) resolve them in this catalog
        return PartChoice(section, stage, name, validate_options(model, options, {"catalog": catalog}), entry)
    except ValidationError as exc:
        errors.extend(_error_lines(section, exc))
        return None


def validate(raw: dict, catalog, sections: tuple[str, ...] | None = None, provenance: dict | None = None
             ) -> RunConfig:
    """Resolve and validate a raw config against the catalog; raise one ConfigError listing every problem.
    Every loaded plugin's ``hookformer_configure`` sees (and may adjust) the raw config first.

    ``sections``: validate only these (``generate`` uses no optimizer; the others are then left out of the result).
    ``provenance``: the run's recorded parts (hookformer.core.provenance), so that a part that is no longer
    installed is reported with the distribution to install."""
    raw = copy.deepcopy(raw)
    for old, new in RENAMED_SECTIONS.items():
        if old in raw:
            raw[new] = raw.pop(old)
    catalog.configure(raw)
    errors: list[str] = []
    for key in raw:
        if key not in SECTIONS:
            close = difflib.get_close_matches(str(key), SECTIONS, n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            errors.append(f"{key}: unknown section{hint}; sections are: {', '.join(SECTIONS)}")
    wanted = set(SECTIONS if sections is None else sections)
    parts = {}
    for section, stage in PART_SECTIONS.items():
        if section not in wanted:
            continue
        if section not in raw:
            errors.append(f"{section}: missing; choose one of: {', '.join(catalog.names(stage))}")
            continue
        choice = _resolve_part(section, stage, raw[section], catalog, errors)
        if choice is not None:
            parts[section] = choice
    lists: dict[str, list[PartChoice]] = {}
    for section, stage in LIST_SECTIONS.items():
        items = (raw.get(section) or []) if section in wanted else []
        if not isinstance(items, list):
            errors.append(f"{section}: expected a list of parts, got {type(items).__name__}")
            items = []
        resolved = [_resolve_part(f"{section}.{i}", stage, item, catalog, errors) for i, item in enumerate(items)]
        lists[section] = [choice for choice in resolved if choice is not None]
    train = None
    try:
        train = validate_options(TrainConfig, raw.get("train") or {})
    except ValidationError as exc:
        errors.extend(_error_lines("train", exc))
    if provenance:
        from hookformer.core.provenance import install_hint

        errors = [f"{error} ({install_hint(provenance[section])})"
                  if (section := error.partition(".name:")[0]) in provenance and ".name: unknown" in error else error
                  for error in errors]
    if errors:
        count = f"{len(errors)} problem{'s' if len(errors) > 1 else ''}"
        raise ConfigError(f"invalid config ({count}): " + "; ".join(e.rstrip(".") for e in errors) + ".")
    return RunConfig(parts, lists["metrics"], lists["hooks"], train, catalog, cleaning=lists["cleaning"])
