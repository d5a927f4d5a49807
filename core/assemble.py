"""The one way a validated config becomes built parts: :class:`Assembly`.

Training (``Run``), ``hookformer evaluate``, ``hookformer generate``, ``hookformer data`` and the benchmarks all build
their parts here, so that every one of them gets the same parts with the same checks:

- the run's hook parts (the ``hooks:`` section) are built first and registered with the run's plugin manager, so
  that their build wrappers (``hookformer_build``, see hookformer.core.hookspecs) see every part built after them;
- every part is built through that hook: the engine's own implementation calls the part's factory;
- an attention kernel that declares capabilities is checked against them on every kind of call;
- the shapes of the model (:class:`~hookformer.core.parts.Shapes`) are negotiated once: from the checkpoint the run
  is rebuilt from, else from the tokenizer's vocabulary and the data's sequence length; the model must cover both;
- a non-empty ``cleaning:`` needs a data part that applies it;
- the optimizer gets the engine's parameter groups and is checked to use them.

Each stage is built once, on first use, after the stages it depends on; a command asks only for what it needs
(``generate`` never reads the training data).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pluggy

from hookformer.core import hookspecs
from hookformer.core.capabilities import CheckedKernel
from hookformer.core.config import PartChoice, RunConfig, resolve_part
from hookformer.core.distributed import World
from hookformer.core.errors import ConfigError, PluginError
from hookformer.core.params import check_optimizer, param_groups
from hookformer.core.parts import BuildContext, Shapes
from hookformer.core.provenance import entry_record

#: The name the engine's own ``hookformer_build`` implementation is registered under.
ENGINE = "hookformer-engine"


class _EngineBuilder:
    """The innermost ``hookformer_build``: the registered part's factory."""

    def __init__(self, catalog):
        self.catalog = catalog

    @hookspecs.hookimpl(trylast=True)
    def hookformer_build(self, stage: str, name: str, options: Any, ctx: BuildContext) -> Any:
        return self.catalog.get(stage, name).build(options, ctx)


class Assembly:
    """The parts of ``config`` for a run in ``run_dir``.

    ``init_from``: the run directory a fine-tuning run starts from (its parts may reuse its files, e.g. the
    tokenizer). ``checkpoint``: the checkpoint whose manifest gives the model's shapes (resume, evaluate, generate,
    the pretrained checkpoint of ``init_from``). ``shapes``: given shapes instead (a model built without data or
    tokenizer, as the benchmarks do).
    """

    def __init__(self, config: RunConfig, run_dir: Path, *, device: str = "cpu", world: World = World(),
                 init_from: Path | None = None, checkpoint: Path | None = None, shapes: Shapes | None = None):
        self.config = config
        self.run_dir = Path(run_dir)
        self.device = device
        self.world = world
        self.init_from = init_from
        self.checkpoint = checkpoint
        self._given_shapes = shapes
        self._saved_shapes = _manifest_shapes(checkpoint) if checkpoint is not None else Shapes()
        self._built: dict[str, Any] = {}
        #: Where every part built so far came from, by section (what ``provenance.json`` records).
        self.provenance: dict[str, dict] = {}
        self.plugins = pluggy.PluginManager(hookspecs.PROJECT)
        self.plugins.add_hookspecs(hookspecs)
        self.plugins.register(_EngineBuilder(config.catalog), name=ENGINE)
        self.hooks = [self._register_hook(i, choice) for i, choice in enumerate(config.hooks)]

    # -- building ---------------------------------------------------------------------------------------------
    def context(self) -> BuildContext:
        """What a factory is given: the run's settings and the parts built so far."""
        cfg, built = self.config.train, self._built
        data = built.get("data")
        return BuildContext(
            run_dir=self.run_dir, device=self.device, seed=cfg.seed, train=cfg, total_steps=cfg.max_steps,
            init_from=self.init_from, cleaners=tuple(built.get("cleaners", ())), data=data,
            tokenizer=built.get("tokenizer"), label_names=_label_names(data), shapes=self.shapes(),
            attention=built.get("attention"), model=built.get("model"),
            param_groups=built.get("param_groups", ()), optimizer=built.get("optimizer"),
            catalog=self.config.catalog, builder=self._build_nested)

    def build(self, stage: str, choice: PartChoice, ctx: BuildContext | None = None) -> Any:
        """One part, built through the run's ``hookformer_build`` hook (its hook parts' wrappers around the
        engine's factory call)."""
        self.provenance[choice.section] = entry_record(stage, choice.name, choice.entry)
        return self.plugins.hook.hookformer_build(stage=stage, section=choice.section, name=choice.name,
                                                  options=choice.options, ctx=ctx or self.context())

    def _build_nested(self, stage: str, value: Any, section: str, ctx: BuildContext) -> Any:
        return self.build(stage, resolve_part(section, stage, value, self.config.catalog), ctx)

    def _register_hook(self, index: int, choice: PartChoice) -> Any:
        """Build hook part ``hooks[index]`` (wrapped by the hook parts before it) and register it with the run."""
        hook = self.build("hook", choice)
        name = f"hooks.{index}:{choice.name}"
        try:
            self.plugins.register(hook, name=name)
            self.plugins.check_pending()
        except (pluggy.PluginValidationError, ValueError) as exc:
            raise PluginError(f'hook part "{choice.name}" ({choice.entry.provider}) cannot be registered: '
                              f"{' '.join(str(exc).split())}. Its methods must be hook implementations "
                              f"(@hookimpl) whose arguments are a subset of the spec's (hookformer.core.hookspecs)."
                              ) from None
        stray = [caller.name for caller in self.plugins.get_hookcallers(hook) or ()
                 if caller.name in hookspecs.DISTRIBUTION_HOOKS]
        if stray:
            raise PluginError(f'hook part "{choice.name}" ({choice.entry.provider}) implements {", ".join(stray)}, '
                              f"which only an entry-point plugin implements; move it to the plugin's module.")
        return hook

    def _once(self, key: str, make) -> Any:
        if key not in self._built:
            self._built[key] = make()
        return self._built[key]

    # -- the stages -------------------------------------------------------------------------------------------
    def cleaners(self) -> list:
        return self._once("cleaners", lambda: [self.build("cleaner", c) for c in self.config.cleaning])

    def data(self):
        """The data part, built after the cleaning steps it applies."""
        def make():
            self.cleaners()
            data = self.build("data", self.config.parts["data"])
            if self.config.cleaning and not getattr(data, "applies_cleaning", False):
                raise ConfigError(f'cleaning: lists {len(self.config.cleaning)} step(s), but the data part '
                                  f'"{self.config.parts["data"].name}" ({self.config.parts["data"].entry.provider}) '
                                  f"does not apply cleaning steps (it declares no applies_cleaning = True), so its "
                                  f"text would be used uncleaned. Remove the cleaning section, or use a data part "
                                  f"that applies it.")
            return data
        return self._once("data", make)

    def tokenizer(self):
        """The tokenizer: trained on the data when this run has built it and the tokenizer has no saved model; else
        reloaded from its files in the run (or the ``init_from`` run)."""
        return self._once("tokenizer", lambda: self.build("tokenizer", self.config.parts["tokenizer"]))

    def prepare_data(self) -> dict:
        """The prepared splits ``{"train": ..., "validation": ...}`` (see DataSource.prepare). Under torchrun rank 0
        goes first: it writes the data caches and trains the tokenizer, then the other ranks load them."""
        def make():
            with self.world.main_first():
                data = self.data()
                return data.prepare(self.tokenizer())
        return self._once("splits", make)

    def attention(self):
        """The attention kernel, checked against its declared capabilities on every kind of call."""
        def make():
            choice = self.config.parts["attention"]
            kernel = self.build("attention", choice)
            capabilities = choice.entry.capabilities()
            return kernel if capabilities is None else CheckedKernel(choice.name, kernel, capabilities)
        return self._once("attention", make)

    def shapes(self) -> Shapes:
        """The model's shapes (see :class:`Shapes`): given; else the vocabulary of the tokenizer (or of the
        checkpoint, when none is built) and the sequence length of the checkpoint (or of the data)."""
        if self._given_shapes is not None:
            return self._given_shapes
        saved = self._saved_shapes
        tokenizer, data = self._built.get("tokenizer"), self._built.get("data")
        # The tokenizer decides the vocabulary (a checkpoint made with another one must then fail to load, not be
        # fed ids that mean other tokens); the checkpoint decides the positions, whatever this run's data.
        return Shapes(tokenizer.vocab_size if tokenizer is not None else saved.vocab_size,
                      saved.max_seq_len or (data.block_size if data is not None else None))

    def model(self):
        """The model on the run's device, built on the attention kernel for the negotiated shapes; it must cover
        the tokenizer's ids and the data's sequence length."""
        def make():
            self.attention()
            model = self.build("model", self.config.parts["model"]).to(self.device)
            self._check_model(model)
            return model
        return self._once("model", make)

    def _check_model(self, model) -> None:
        part = f'the model part "{self.config.parts["model"].name}"'
        tokenizer, data = self._built.get("tokenizer"), self._built.get("data")
        if tokenizer is not None and model.vocab_size < tokenizer.vocab_size:
            raise ConfigError(f"{part} scores {model.vocab_size} ids, fewer than the tokenizer's vocabulary "
                              f"({tokenizer.vocab_size}): leave its vocabulary size to the tokenizer.")
        if data is not None and model.max_seq_len < data.block_size:
            raise ConfigError(f"{part} takes sequences of at most {model.max_seq_len} tokens, but the data part "
                              f'"{self.config.parts["data"].name}" gives {data.block_size}: shorten the data\'s '
                              f"sequences or lengthen the model's.")

    def objective(self):
        """The objective, built once the model exists (it attaches its task heads to it)."""
        def make():
            self.model()
            return self.build("objective", self.config.parts["objective"])
        return self._once("objective", make)

    def optimizer(self):
        """The optimizer over the engine's parameter groups of the model with its heads (built after the
        objective, and after any weights are frozen), checked to hold them."""
        def make():
            model = self.model()
            self.objective()
            head_lr = self.config.train.head_lr
            self._built["param_groups"] = param_groups(model, head_lr)
            choice = self.config.parts["optimizer"]
            optimizer = self.build("optimizer", choice)
            check_optimizer(optimizer, model, head_lr, choice.name)
            return optimizer
        return self._once("optimizer", make)

    def scheduler(self):
        def make():
            self.optimizer()
            return self.build("scheduler", self.config.parts["scheduler"])
        return self._once("scheduler", make)

    def metrics(self) -> list:
        def make():
            self.objective()
            return [self.build("metric", choice) for choice in self.config.metrics]
        return self._once("metrics", make)

    # -- run events -------------------------------------------------------------------------------------------
    def emit(self, event: str, **arguments) -> None:
        """Call the run event ``hookformer_<event>`` of every hook part (see hookformer.core.hookspecs)."""
        getattr(self.plugins.hook, f"hookformer_{event}")(**arguments)

    def register(self, plugin: object, name: str | None = None) -> None:
        """Register one more object implementing run hooks for this run (tests, embedding applications); a hook
        part listed in ``hooks:`` is the way a config does it."""
        self.plugins.register(plugin, name=name)
        self.plugins.check_pending()


def _label_names(data) -> tuple[str, ...] | None:
    names = getattr(data, "label_names", None)
    return tuple(names) if names else None


def _manifest_shapes(path: Path) -> Shapes:
    """The shapes a checkpoint's model was built with. Manifests written before shapes were stored have the data's
    block size, which the model then followed."""
    from hookformer.core import checkpoint

    saved = checkpoint.manifest(Path(path))
    shapes = saved.get("shapes") or {}
    return Shapes(shapes.get("vocab_size"), shapes.get("max_seq_len") or saved.get("block_size"))
