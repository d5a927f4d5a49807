"""The plugin API. Every hook spec's docstring is its reference.

Two kinds of plugin implement these hooks:

- **Distribution plugins**, the modules (or objects) named by an entry point in the ``hookformer`` group::

      [project.entry-points.hookformer]
      my_plugin = "my_package.hookformer_plugin"

  They implement :func:`hookformer_parts` (registration) and :func:`hookformer_configure` (the raw config of every
  run). Installing one never changes what a run computes: its parts take part only where a config names them.
  A module of this kind may declare the plugin API versions it supports with ``HOOKFORMER_API = ">=1.0,<2"``
  (a PEP 440 specifier); outside that range it is refused.
- **Hook parts**, the parts of stage ``hook`` that a run lists in its ``hooks:`` section. The engine builds each
  listed part first and registers the built object with the run, where its methods implement the run hooks below:
  build wrappers (:func:`hookformer_build`, with :func:`hookformer_added_tensors` and
  :func:`hookformer_export_model` for what a wrapper adds to the model) and run events (``hookformer_run_start``
  ... ``hookformer_run_end``).
  Which hook parts are active is therefore written in the run's ``config.yaml``, and a run is reproducible from it.

Implement a hook with the :data:`hookimpl` marker, on a module function (distribution plugins) or a method (hook
parts). Hook specs only ever grow by new optional arguments: an implementation may accept any subset of a spec's
arguments, so plugins written against an older API keep working.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pluggy

PROJECT = "hookformer"
hookspec = pluggy.HookspecMarker(PROJECT)
#: Decorate your hook implementations with this marker (``@hookimpl``, ``@hookimpl(wrapper=True)``...).
hookimpl = pluggy.HookimplMarker(PROJECT)

#: The hooks a distribution plugin implements; the other hooks belong to hook parts (see the module docstring).
DISTRIBUTION_HOOKS = ("hookformer_parts", "hookformer_configure")


# -- distribution plugins -----------------------------------------------------------------------------------------
@hookspec
def hookformer_parts() -> list:
    """Return the parts this plugin contributes, as a list of :class:`hookformer.core.parts.PartSpec`.

    Called once when the catalog is built, before any run; it must be cheap and import nothing heavy (give the
    factory and options model as "module:attribute" strings so that ``hookformer plugins list`` stays fast).
    A plugin may contribute parts to any number of stages. A (stage, name) pair that another distribution already
    registers is an error unless the spec says ``override=True``.
    """


@hookspec
def hookformer_configure(raw: dict) -> None:
    """Look at, or adjust, the raw config of a run before it is validated (like ``pytest_configure``).

    ``raw`` is the composed config as plain YAML data (default recipe <- config file <- ``--set`` overrides), with
    one key per section. Change it in place, e.g. fill an option your part needs from an environment variable, or
    raise :class:`hookformer.core.errors.ConfigError` to refuse it with a message naming the field. Called for every
    loaded distribution plugin, for every command that validates a config (train, finetune, evaluate, generate,
    data); what it changes is validated with the rest and saved in the run's ``config.yaml``.
    """


# -- hook parts: build wrappers -----------------------------------------------------------------------------------
@hookspec(firstresult=True)
def hookformer_build(stage: str, section: str, name: str, options: Any, ctx: Any) -> Any:
    """Build one part of the run; the result is the built part.

    The engine implements this hook itself: it calls the factory of the registered part ``name`` of ``stage``
    with its validated ``options`` (a pydantic model) and the :class:`hookformer.core.parts.BuildContext` ``ctx``.
    A hook part wraps it to change or replace what is built, for every part of every stage (``stage`` is one of
    :data:`hookformer.core.parts.STAGES`; ``section`` is where the config names the part: ``model``,
    ``metrics.1``, ``objective.objectives.0`` for a nested part). Write a new-style pluggy wrapper::

        @hookimpl(wrapper=True)
        def hookformer_build(self, stage, ctx):
            part = yield              # the part as built by the engine (and any inner wrapper)
            if stage == "model":
                ...                   # freeze, add adapters, checkpoint activations, attach a profiler
            return part               # or another object that follows the stage's protocol

    The engine's own checks apply to the wrapped result: an attention kernel is checked against the capabilities its
    part declares, a model against the data's sequence length. Wrappers run on every rank of a distributed run.
    """


# -- hook parts: what a build wrapper added to the model -----------------------------------------------------------
@hookspec
def hookformer_added_tensors(model: Any) -> list[str]:
    """Return the names of the model's tensors that this hook part's build wrapper added (adapters, say).

    A pretrained checkpoint (``train.init_from``, a run made by ``hookformer import``) holds the model part's own
    tensors only; the tensors named here may be missing from it and then keep the values the wrapper gave them, as
    task heads do (where the checkpoint holds them with the same shapes, they are loaded). Every other tensor the
    checkpoint lacks is still an error. Called on every rank, after the model and the objective are built.
    """


@hookspec
def hookformer_export_model(model: Any) -> None:
    """Give ``model`` back its model part's own form, in place, before its weights are written in another format.

    ``hookformer export`` builds the run's model (through the build wrappers), loads the checkpoint, calls this, and
    writes only the tensors the model part itself defines. A hook part whose wrapper changed what the model computes
    folds that change into those tensors here and removes what it added (LoRA: ``W += scale * B A``, adapters and
    forward hooks dropped), so the exported weights compute what the run's model computes. A tensor left that the
    export cannot place is an error naming it.
    """


# -- hook parts: run events ---------------------------------------------------------------------------------------
# ``run`` is a :class:`hookformer.core.parts.RunView`: a small read-only view of the run (step, config, run_dir,
# model, loss_unit, log). Events are called on the rank that writes the run's files (rank 0) only.

@hookspec
def hookformer_run_start(run: Any) -> None:
    """The run is assembled (and restored, when resumed) and about to take its first step (``run.step``)."""


@hookspec
def hookformer_step_end(run: Any, record: dict) -> None:
    """A training record was written to ``metrics.jsonl`` (every ``train.log_every`` steps and at the last step).

    ``record`` holds ``step``, ``loss``, ``lr``, ``grad_norm`` and ``tokens_per_s``; do not change it.
    """


@hookspec
def hookformer_eval_end(run: Any, record: dict) -> None:
    """An evaluation record was written to ``metrics.jsonl``: ``step`` and every metric as ``val_<key>``."""


@hookspec
def hookformer_checkpoint_saved(run: Any, path: Path) -> None:
    """A checkpoint of ``run.step`` is complete on disk at ``path`` (a ``checkpoints/step_N`` folder)."""


@hookspec
def hookformer_run_end(run: Any, summary: dict) -> None:
    """Training is over (max steps or early stopping) and the samples are written. ``summary`` is what the command
    prints: the step, the baselines and the last (or best) evaluation."""
