"""Hugging Face models in and out: ``hookformer import HF_DIR --run-dir RUN`` and ``hookformer export RUN --format hf
OUT_DIR``.

A family (a part of stage ``family``, see :class:`Family`) says as data how one Hugging Face architecture maps onto
a model part it names (the built-ins: ``transformer``): config.json fields to model options and back, each weight's
names and transform, the tokenizer part and the objective of an imported run. The engine names no model part.
This engine reads config.json, picks the family by ``model_type``, streams the safetensors tensors one at a time into
the model that :class:`~hookformer.core.assemble.Assembly` builds, and writes a normal run directory (or, exporting, a
Hugging Face directory). Both write into a temporary folder renamed into place at the end: a failure leaves nothing.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from hookformer.core.errors import CheckpointError, ConfigError

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"


@dataclass(frozen=True)
class Rule:
    """Hugging Face tensors ``hf`` <-> the model's tensor ``ours``, through the named transform (see
    :data:`TRANSFORMS`). Names are templates: ``{i}`` is the block index."""

    hf: tuple[str, ...]
    ours: str
    transform: str = "copy"


@dataclass(frozen=True)
class Family:
    """One Hugging Face model family, as data.

    ``model_types``: the config.json ``model_type`` values it reads (the first is written on export).
    ``architectures``: the classes whose weights ``rules`` name (the first is written on export).
    ``options(config_json) -> dict``: the options of the model part ``model``; a ConfigError names any config.json field
    the model cannot reproduce. ``hf_config(options, vocab_size, max_seq_len) -> dict``: config.json fields for
    export; a ConfigError says why the model is not one of this family. ``ignored``: tensor name templates that
    hold no weights (buffers old checkpoints saved). ``base_prefix``: the prefix of the base model's tensors, which
    a checkpoint saved from the base model lacks (GPT-2 on the Hub has ``wte.weight``, not ``transformer.wte.weight``).
    """

    name: str
    model_types: tuple[str, ...]
    architectures: tuple[str, ...]
    rules: tuple[Rule, ...]
    options: Callable[[dict], dict]
    hf_config: Callable[[Any, int, int], dict]
    ignored: tuple[str, ...] = ()
    base_prefix: str = ""
    #: The model part whose options ``options`` gives and ``hf_config`` reads; the tokenizer part that reads the
    #: directory's tokenizer files; the objective an imported run is configured with (a fine-tuning config replaces
    #: it); the head layout of the model part's options.
    model: str = field(kw_only=True)
    tokenizer: str = field(kw_only=True)
    objective: str = field(kw_only=True)
    geometry: Callable[[Any], "Geometry"] = field(kw_only=True)


@dataclass(frozen=True)
class Geometry:
    """The head layout a fused projection is split by."""

    n_head: int
    kv_heads: int
    head_dim: int


def _pairs_adjacent(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of each head from Hugging Face's RoPE order (dimension j pairs with j + D/2) to the model's (2i, 2i+1)."""
    return w.reshape(heads, 2, -1, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def _pairs_halves(w: torch.Tensor, heads: int) -> torch.Tensor:
    """The inverse of :func:`_pairs_adjacent`."""
    return w.reshape(heads, -1, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def _split_qkv(t: torch.Tensor, g: Geometry) -> list[torch.Tensor]:
    return list(t.split([g.n_head * g.head_dim, g.kv_heads * g.head_dim, g.kv_heads * g.head_dim]))


def _fuse_qkv_rope(ts: list[torch.Tensor], g: Geometry) -> torch.Tensor:
    return torch.cat([_pairs_adjacent(ts[0], g.n_head), _pairs_adjacent(ts[1], g.kv_heads), ts[2]])


def _split_qkv_rope(t: torch.Tensor, g: Geometry) -> list[torch.Tensor]:
    q, k, v = _split_qkv(t, g)
    return [_pairs_halves(q, g.n_head), _pairs_halves(k, g.kv_heads), v]


#: name -> (Hugging Face tensors -> ours, ours -> Hugging Face tensors).
TRANSFORMS: dict[str, tuple[Callable, Callable]] = {
    "copy": (lambda ts, g: ts[0], lambda t, g: [t]),
    "transpose": (lambda ts, g: ts[0].t(), lambda t, g: [t.t()]),  # GPT-2's Conv1D stores (in, out)
    "fuse_qkv": (lambda ts, g: torch.cat(ts), _split_qkv),
    "fuse_qkv_rope": (_fuse_qkv_rope, _split_qkv_rope),
    # A head-dim vector in RoPE order (per-coordinate weights of each head, as QK-norm's): permuted as a head's rows.
    "rope_pairs": (lambda ts, g: _pairs_adjacent(ts[0], 1), lambda t, g: [_pairs_halves(t, 1)]),
}


def expect(family: str, options: Any, **wanted: Any) -> None:
    """Export: refuse a model whose options differ from what ``family`` can express, naming each."""
    wrong = [f"{key}: {getattr(options, key)!r} (needs {value!r})" for key, value in wanted.items()
             if getattr(options, key) != value]
    if wrong:
        raise ConfigError(f"{family} needs model options it does not have: {', '.join(wrong)}")


def require(config: dict, family: str, field: str, allowed: tuple, why: str) -> None:
    """Import: refuse a config.json field the model cannot reproduce (a missing field counts as ``allowed[0]``)."""
    value = config.get(field, allowed[0])
    if value not in allowed:
        raise ConfigError(f"{family}: config.json has {field} = {value!r}, which the family's model part cannot "
                          f"reproduce ({why}); supported: {', '.join(map(repr, allowed))}.")


def families(catalog) -> list[Family]:
    from hookformer.core.parts import PartOptions

    return [catalog.get("family", name).build(PartOptions(), None) for name in catalog.names("family")]


def read_config(hf_dir: Path) -> dict:
    path = hf_dir / CONFIG
    if not path.is_file():
        raise ConfigError(f"{hf_dir} is not a Hugging Face model directory: it has no {CONFIG}.")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}.") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path} is not a JSON object.")
    return config


def family_of(catalog, config: dict, hf_dir: Path) -> Family:
    """The registered family that reads this config.json, by its model_type and architectures."""
    model_type = config.get("model_type")
    known = families(catalog)
    candidates = [f for f in known if model_type in f.model_types]
    if not candidates:
        types = ", ".join(sorted({t for f in known for t in f.model_types}))
        raise ConfigError(f"{hf_dir / CONFIG}: model_type {model_type!r} has no hookformer family (supported: "
                          f"{types}); a plugin adds one by registering a part of stage family.")
    architectures = set(config.get("architectures") or ())
    family = next((f for f in candidates if architectures <= set(f.architectures)), None)
    if family is None:
        readable = ", ".join(a for f in candidates for a in f.architectures)
        raise ConfigError(f"{hf_dir / CONFIG}: architecture {', '.join(sorted(architectures))} is not read by any "
                          f"family of model_type {model_type!r} (they read {readable}).")
    return family


def mapped_names(family: Family, model: torch.nn.Module) -> Iterator[tuple[tuple[str, ...], str, str]]:
    """(Hugging Face names, our name, transform) of every tensor of ``model``, blocks expanded as far as the model
    has them. A tensor tied to another (an output projection that is the token embedding) is stored once, under the
    name the model gives it first, so a rule for its second name is skipped."""
    own = set(model.state_dict())
    distinct = {name for name, _ in (*model.named_parameters(), *model.named_buffers())}
    for rule in family.rules:
        layers = itertools.takewhile(lambda i: rule.ours.format(i=i) in own, itertools.count()) \
            if "{i}" in rule.ours else (None,)
        for i in layers:
            ours = rule.ours.format(i=i)
            if ours in own and ours not in distinct:
                continue
            yield tuple(name.format(i=i) for name in rule.hf), ours, rule.transform


class _Tensors:
    """The safetensors of a Hugging Face directory, by name, read one tensor at a time (never a pickle .bin)."""

    def __init__(self, hf_dir: Path, stack: ExitStack, base_prefix: str):
        self.hf_dir, self.base_prefix = hf_dir, base_prefix
        index = hf_dir / INDEX
        if index.is_file():
            try:
                files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            except (ValueError, KeyError, TypeError, AttributeError):
                raise CheckpointError(f"{index} is not a safetensors index (no weight_map).") from None
        elif (hf_dir / WEIGHTS).is_file():
            files = [WEIGHTS]
        else:
            pickles = sorted(p.name for p in hf_dir.glob("*.bin"))
            hint = (f" It has {', '.join(pickles)}: pickle files are never read (loading them can run code); convert "
                    f"them to safetensors first." if pickles else "")
            raise CheckpointError(f"{hf_dir} has no {WEIGHTS} and no {INDEX}.{hint}")
        from safetensors import SafetensorError, safe_open

        self.handles: dict[str, Any] = {}
        for name in files:
            path = hf_dir / name
            if not path.is_file():
                raise CheckpointError(f"{path}, a shard named by {INDEX}, is missing.")
            try:
                handle = stack.enter_context(safe_open(str(path), framework="pt"))
            except (SafetensorError, OSError) as exc:
                raise CheckpointError(f"{path} is not a readable safetensors file (truncated?): {exc}.") from None
            self.handles.update((key, handle) for key in handle.keys())

    def stored_name(self, name: str) -> str:
        """``name`` as the checkpoint stores it: with or without the base model's prefix."""
        if name not in self.handles and self.base_prefix and name.startswith(self.base_prefix):
            bare = name.removeprefix(self.base_prefix)
            if bare in self.handles:
                return bare
        if name not in self.handles:
            raise CheckpointError(f"{self.hf_dir} lacks the tensor {name}: a shard is missing or the weights are not "
                                  f"those of its config.json.")
        return name


@torch.no_grad()
def load_hf_weights(model: torch.nn.Module, family: Family, hf_dir: Path, options: Any) -> None:
    """Copy the Hugging Face tensors into ``model`` through ``family``'s rules. Every tensor of the model is
    written, and every Hugging Face tensor is used (else the model would silently differ)."""
    own = model.state_dict()
    geometry = family.geometry(options)
    written, used = set(), set()
    with ExitStack() as stack:
        tensors = _Tensors(hf_dir, stack, family.base_prefix)
        for names, ours, transform in mapped_names(family, model):
            hf_names = [tensors.stored_name(name) for name in names]
            source = [tensors.handles[name].get_tensor(name) for name in hf_names]
            try:
                tensor = TRANSFORMS[transform][0](source, geometry)
            except RuntimeError:
                tensor = None
            if tensor is None or tensor.shape != own[ours].shape:
                shapes = ", ".join(f"{n} {tuple(t.shape)}" for n, t in zip(hf_names, source))
                raise CheckpointError(f"{hf_dir}: the shapes of {shapes} disagree with its {CONFIG}, which gives "
                                      f"{tuple(own[ours].shape)} for {ours}.")
            own[ours].copy_(tensor)
            written.add(ours)
            used.update(hf_names)
        ignored = re.compile("|".join(re.escape(t).replace(r"\{i\}", r"\d+") for t in family.ignored) or "(?!)")
        unused = sorted(n for n in tensors.handles
                        if n not in used and not ignored.fullmatch(n) and not ignored.fullmatch(family.base_prefix + n))
    if unused:
        raise CheckpointError(f"{hf_dir} holds tensors family {family.name} does not map: {', '.join(unused[:5])}"
                              f"{' ...' if len(unused) > 5 else ''}; importing would drop them.")
    distinct = {name for name, _ in (*model.named_parameters(), *model.named_buffers())}
    unset = sorted(name for name in own if name in distinct and name not in written)
    if unset:
        raise ConfigError(f"family {family.name} does not map the model tensors {', '.join(unset[:5])}.")


def _read_family(hf_dir: Path, catalog) -> tuple[Family, dict]:
    """The family that reads ``hf_dir`` and the model options it gives for its config.json."""
    hf_config = read_config(hf_dir)
    family = family_of(catalog, hf_config, hf_dir)
    try:
        return family, family.options(hf_config)
    except KeyError as exc:
        raise ConfigError(f"{hf_dir / CONFIG} lacks the field {exc} that family {family.name} needs.") from None


def hf_run_config(hf_dir: Path, catalog) -> dict:
    """The raw config of the run ``hookformer import`` makes of ``hf_dir`` (read from config.json: no weights)."""
    return _import_config(Path(hf_dir), *_read_family(Path(hf_dir), catalog))


def _import_config(hf_dir: Path, family: Family, model_options: dict) -> dict:
    """The run config of an imported model: the fine-tuning recipe (pretrained weights) with the model, its
    tokenizer and an objective of its kind (the data, optimizer and loop sections are the recipe's: a fine-tuning
    config replaces them)."""
    from hookformer.core.config import fine_tuning_recipe

    raw = fine_tuning_recipe()
    raw["tokenizer"] = {"name": family.tokenizer, "path": str(hf_dir.resolve())}
    raw["model"] = {"name": family.model, **model_options}
    raw["objective"] = {"name": family.objective}
    raw["data"]["block_size"] = min(raw["data"]["block_size"], model_options["max_seq_len"])
    return raw


def _fresh_target(path: Path, what: str) -> Path:
    """A temporary sibling of ``path`` to write into, after checking ``path`` may be created."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(f"{what} {path} already exists; choose a new directory.")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def _move_into_place(tmp: Path, path: Path) -> None:
    if path.exists():
        path.rmdir()  # empty, checked by _fresh_target
    os.replace(tmp, path)


def import_hf(hf_dir: Path, run_dir: Path, catalog) -> Path:
    """Write the run directory ``run_dir`` from the Hugging Face model directory ``hf_dir``; returns its checkpoint."""
    import yaml

    import hookformer
    from hookformer.core import checkpoint, provenance
    from hookformer.core.assemble import Assembly
    from hookformer.core.config import validate
    from hookformer.core.parts import Shapes

    hf_dir, run_dir = Path(hf_dir), Path(run_dir)
    family, model_options = _read_family(hf_dir, catalog)
    config = validate(_import_config(hf_dir, family, model_options), catalog)
    tmp = _fresh_target(run_dir, "--run-dir")
    try:
        assembly = Assembly(config, tmp)
        tokenizer = assembly.tokenizer()
        if tokenizer.vocab_size > model_options["vocab_size"]:
            raise ConfigError(f"{hf_dir}: the tokenizer has {tokenizer.vocab_size} ids, but the embedding of "
                              f"{CONFIG} has {model_options['vocab_size']} rows: they are not the same model's.")
        model = assembly.model()
        load_hf_weights(model, family, hf_dir, config.parts["model"].options)
        shapes = Shapes(model.vocab_size, model.max_seq_len).to_dict()
        path = checkpoint.save(tmp, 0, model, {"step": 0}, keep=1,
                               meta={"shapes": shapes, "imported_from": str(hf_dir.resolve()), "family": family.name})
        checkpoint.write_atomically(tmp / "config.yaml", yaml.safe_dump(config.dump(), sort_keys=False))
        checkpoint.write_atomically(tmp / provenance.FILE, json.dumps(
            {"hookformer": hookformer.__version__, "parts": assembly.provenance}, indent=2))
        _move_into_place(tmp, run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return run_dir / path.relative_to(tmp)


def hf_family_config(catalog, model: str, options: Any, vocab_size: int, max_seq_len: int) -> tuple[Family, dict]:
    """The first family that expresses the model, with its config.json; else a ConfigError with each reason."""
    reasons = []
    for family in families(catalog):
        if family.model != model:
            continue
        try:
            return family, family.hf_config(options, vocab_size, max_seq_len)
        except ConfigError as exc:
            reasons.append(f"{family.name}: {exc}")
    raise ConfigError("no Hugging Face family expresses this model (" + "; ".join(reasons) + ").")


@torch.no_grad()
def export_hf(config, run_dir: Path, checkpoint_path: Path, out_dir: Path) -> list[str]:
    """Write ``out_dir``: config.json, model.safetensors and the tokenizer's files, loadable by transformers'
    ``AutoModel...from_pretrained`` without custom code. Returns notes for the user."""
    from safetensors.torch import save_file

    from hookformer.core import checkpoint
    from hookformer.core.assemble import Assembly

    out_dir = Path(out_dir)
    if out_dir.exists():
        raise ConfigError(f"the export target {out_dir} already exists; choose a new directory.")
    choice = config.parts["model"]
    if not any(family.model == choice.name for family in families(config.catalog)):
        raise ConfigError(f'the run\'s model part is "{choice.name}", and no registered family maps it onto a '
                          f"Hugging Face model.")
    options = choice.options
    assembly = Assembly(config, run_dir, checkpoint=checkpoint_path)
    tokenizer = assembly.tokenizer()
    model = assembly.model()
    family, hf_config = hf_family_config(config.catalog, choice.name, options, model.vocab_size, model.max_seq_len)
    _, unused = checkpoint.load_pretrained(checkpoint_path, model)
    assembly.emit("export_model", model=model)  # hook parts fold what they added into the model part's weights
    mapped = list(mapped_names(family, model))
    distinct = {name for name, _ in (*model.named_parameters(), *model.named_buffers())}
    unplaced = sorted(distinct & set(model.state_dict()) - {ours for _, ours, _ in mapped}
                      - {name for name in distinct if name.startswith("heads.")})
    if unplaced:
        raise ConfigError(f"family {family.name} has no place for the model tensors {', '.join(unplaced[:5])}: a hook "
                          f"part of the run added them to the model part and did not fold them into its weights for "
                          f"export (hook hookformer_export_model); exporting without them would change the model.")
    special = tokenizer.special
    hf_config.update(architectures=[family.architectures[0]], model_type=family.model_types[0],
                     bos_token_id=special.bos, eos_token_id=special.eos, pad_token_id=special.pad)
    own = model.state_dict()
    geometry = family.geometry(options)
    tensors = {}
    for hf_names, ours, transform in mapped:
        # Cloned: a split fused tensor's views share memory, which safetensors refuses.
        parts = TRANSFORMS[transform][1](own[ours], geometry)
        tensors.update(zip(hf_names, (t.clone(memory_format=torch.contiguous_format) for t in parts)))
    tmp = _fresh_target(out_dir, "the export target")
    notes = [f"task heads of the checkpoint not exported (family {family.name} has no place for them): "
             f"{', '.join(unused)}"] if unused else []
    try:
        tmp.mkdir(parents=True)
        (tmp / CONFIG).write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt"})
        # save_hf(folder) writes the tokenizer's files, or returns why it has none (and writes nothing).
        save_hf = getattr(tokenizer, "save_hf", None)
        missing = save_hf(tmp) if save_hf is not None else "it has no save_hf"
        if missing:
            notes.append(f'the tokenizer part "{config.parts["tokenizer"].name}" has no Hugging Face form '
                         f"({missing}): only the model was exported")
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [f"exported as {family.name} ({family.architectures[0]})", *notes]
