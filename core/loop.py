"""The run: assemble the parts named by a validated config, then train, evaluate, checkpoint and sample.

The loop talks to every part only through its stage protocol (core/parts.py), so a built-in part has no advantage
over a third-party one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

import hookformer
from hookformer.core import checkpoint, interrupt, provenance, runfiles
from hookformer.core.assemble import Assembly
from hookformer.core.config import EarlyStoppingConfig, RunConfig, is_hf_model_dir, pretrained_run_dir
from hookformer.core.distributed import World
from hookformer.core.errors import CheckpointError, ConfigError, HookformerError
from hookformer.core.evaluate import evaluate
from hookformer.core.generate import Decoding, encode_source, generate, is_encoder_decoder
from hookformer.core.objective import compute
from hookformer.core.parts import RunView, Shapes, is_decoder
from hookformer.core.precision import check_bf16
from hookformer.core.sampler import SegmentStreams, TableStream, as_table, table_rows


#: The hidden run directory into which a run imports the Hugging Face model its ``train.init_from`` names.
IMPORTED = ".init_from"


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise HookformerError("train.device is cuda, but torch sees no CUDA device; use train.device=cpu or auto.")
    return name


def accumulate_gradients(model, objective, batches: list[dict], autocast=contextlib.nullcontext,
                         world: World = World(), scopes: list | None = None) -> tuple[float, int, int]:
    """Backpropagate the objective over micro-batches and leave the gradient of the mean loss over all their items.

    Objectives return summed losses; the accumulated gradient is divided once by the total item count, so any split
    of a batch into micro-batches gives the gradient of the one large batch. Under data parallelism ``model`` is the
    wrapped module, the totals are over every rank's micro-batches, and the division accounts for the wrapper's
    gradient reduction averaging over the ranks. ``scopes``: a context manager per micro-batch, entered around its
    forward pass (a segment memory's). Returns (loss sum, items, tokens), summed over the ranks.
    """
    loss_sum, items, tokens = 0.0, 0, 0
    for i, batch in enumerate(batches):
        with world.no_sync(model) if i < len(batches) - 1 else contextlib.nullcontext():
            with scopes[i] if scopes else contextlib.nullcontext(), autocast():
                result = compute(objective, model, batch)
            result.loss_sum.backward()
        loss_sum += float(result.loss_sum.detach())
        items += result.num_items
        mask = batch.get("attention_mask")
        tokens += int(mask.sum()) if mask is not None else batch["input_ids"].numel()
    loss_sum, items, tokens = world.sum(loss_sum, items, tokens)
    grads = [param.grad for param in model.parameters() if param.grad is not None]
    torch._foreach_div_(grads, max(1.0, items) / world.size)
    return loss_sum, int(items), int(tokens)


class EarlyStopping:
    """``train.early_stopping``: follows one evaluation value, remembers the best evaluation, and says when
    ``patience`` evaluations in a row have not improved on it by more than ``min_delta``."""

    def __init__(self, config: EarlyStoppingConfig):
        self.config = config
        self.best: dict | None = None  # the best evaluation record
        self.evals_without_improvement = 0

    def check(self, values: dict) -> None:
        """ConfigError unless the evaluation ``values`` hold the metric followed."""
        if self.config.metric not in values:
            raise ConfigError(f"train.early_stopping.metric is {self.config.metric}, but evaluations give: "
                              f"{', '.join(key for key in values if key != 'step') or 'nothing'}. Choose one of "
                              f"these, or add the metric that gives it to metrics.")

    def update(self, record: dict) -> bool:
        """Take an evaluation record; True when it is the new best."""
        cfg = self.config
        self.check(record)
        value, sign = record[cfg.metric], 1.0 if cfg.mode == "max" else -1.0
        if self.best is None or sign * (value - self.best[cfg.metric]) > cfg.min_delta:
            self.best, self.evals_without_improvement = record, 0
            return True
        self.evals_without_improvement += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.evals_without_improvement >= self.config.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "evals_without_improvement": self.evals_without_improvement}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.evals_without_improvement = state["best"], state["evals_without_improvement"]


def compile_for_training(model, objective, batch: dict, autocast=contextlib.nullcontext):
    """``model`` under ``torch.compile`` with static shapes, compiled now by a forward and backward of ``batch`` in
    training mode (RNG state restored, gradients dropped) rather than during the first step."""
    compiled = torch.compile(model, dynamic=False, backend=_inductor_deterministic_embedding_backward)
    device = batch["input_ids"].device
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []), _without_ci_variable():
        model.train()
        with autocast():
            result = compute(objective, compiled, batch)
        result.loss_sum.backward()
    for param in model.parameters():
        param.grad = None
    return compiled


@contextlib.contextmanager
def _without_ci_variable():
    """Inductor asserts, while it lowers a graph with the CI variable set (a check meant for PyTorch's own CI), that no
    op with a decomposition falls back to its eager kernel; keeping the embedding backward is deliberate here."""
    ci = os.environ.pop("CI", None)
    try:
        yield
    finally:
        if ci is not None:
            os.environ["CI"] = ci


def _inductor_deterministic_embedding_backward(graph, example_inputs):
    """torch.compile's default backend, Inductor, except that the embedding backward stays PyTorch's own kernel:
    Inductor's would scatter-add the gradient rows with atomic adds in an order that changes from process to process,
    so that neither two runs nor a resumed run and the uninterrupted one would compute the same bits."""
    from torch._inductor.compile_fx import compile_fx
    from torch._inductor.decomposition import select_decomp_table

    kept = {torch.ops.aten.embedding_dense_backward.default, torch.ops.aten.embedding_dense_backward.out}
    decompositions = {op: rule for op, rule in select_decomp_table().items() if op not in kept}
    return compile_fx(graph, example_inputs, decompositions=decompositions)


class Run:
    """One training run in ``run_dir``. ``Run(config, run_dir).train()``; pass ``resume=True`` to continue from the
    run's latest checkpoint (``resume="step_000110"``: from that one). Its parts come from one
    :class:`~hookformer.core.assemble.Assembly`; the run's hook parts (``hooks:``) receive its events, and
    ``run.assembly.register(obj)`` adds another object implementing run hooks.

    Under torchrun every rank builds a Run with its ``world``; files, logs, the progress bar and run events are rank
    0's, and every rank takes part in training, evaluation and sampling (an FSDP2 forward needs all of them)."""

    def __init__(self, config: RunConfig, run_dir: Path, resume: bool | str = False, world: World = World()):
        self.config = config
        self.train_cfg = config.train
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.world = world
        self.device = resolve_device(self.train_cfg.device)
        self.step = 0
        self._bar = None
        self._setup()

    # -- assembly ---------------------------------------------------------------------------------------------
    def _setup(self) -> None:
        cfg = self.train_cfg
        self.world.check_same("resolved config", self.config.dump())
        check_bf16(self.device, cfg.bf16)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        # The checkpoint whose shapes the model is rebuilt with: the run's own on resume (it has its own tokenizer
        # and weights), the pretrained one when fine-tuning.
        init_from = pretrained = None
        imported = not self.resume and cfg.init_from is not None and is_hf_model_dir(cfg.init_from)
        if self.resume:
            source = checkpoint.find(self.run_dir, self.resume if isinstance(self.resume, str) else None)
        elif cfg.init_from is not None:
            pretrained = self._import_init_from() if imported else Path(cfg.init_from)
            init_from = pretrained_run_dir(pretrained)
            source = pretrained if (pretrained / checkpoint.MANIFEST).is_file() else checkpoint.latest(pretrained)
        else:
            source = None
        if source is not None:
            checkpoint.verify(source)  # before its manifest decides the model's shapes
        assembly = self.assembly = Assembly(self.config, self.run_dir, device=self.device, world=self.world,
                                            init_from=init_from, checkpoint=source)
        self.log("preparing data")
        splits = assembly.prepare_data()
        self.data, self.tokenizer = assembly.data(), assembly.tokenizer()
        train = splits["train"]
        self.train_table = None if hasattr(train, "next_batch") else as_table(train)
        self.val_table = as_table(splits["validation"])
        self.model, self.objective = assembly.model(), assembly.objective()  # the objective attaches its task heads
        self.train_stream = self._train_stream(train)
        # Segment recurrence: this rank's memory of its streams (train.order streams), never checkpointed.
        self.segment_memory = None
        if pretrained is not None:
            self._load_pretrained(source)
            if imported:  # its weights are in the model: the imported copy has served
                self.world.barrier()
                if self.world.is_main:
                    shutil.rmtree(pretrained)
        if cfg.freeze_backbone:
            self._freeze_backbone()
        probe = self._probe_model()
        # Full weights are loaded before FSDP2 shards them; the rest of the state once the optimizer exists.
        saved = (source, checkpoint.load(source, self.model)) if self.resume else None
        self.train_model = self.world.wrap(self.model, self.device)
        if cfg.compile:
            # Wrapped first, then compiled: Dynamo splits the graph at DDP's gradient buckets (so that their
            # all-reduce overlaps the backward) only when it traces DDP's own forward, and FSDP2 shards the model
            # in place, so the compiled module is the sharded one with its hooks.
            # ``self.model`` stays the plain module: checkpoints keep its parameter names, and evaluation and
            # sampling (other shapes, no grad) run it uncompiled, so only the training batch shape is compiled.
            began = time.perf_counter()
            self.train_model = compile_for_training(self.train_model, self.objective,
                                                    self._batch(table_rows(self.val_table, [0] * cfg.batch_size)),
                                                    self._autocast)
            self.log(f"compiled the model in {time.perf_counter() - began:.1f} s")
        self.optimizer, self.scheduler = assembly.optimizer(), assembly.scheduler()
        self.metrics = assembly.metrics()
        self.early_stopping = self._early_stopping(self._probe_metrics(probe))
        if saved is not None:
            self._restore(*saved)
        # Written only once everything is assembled (and restored), so a failed start leaves an existing run as it
        # was; on resume the config keeps the overrides given with --set.
        if self.world.is_main:
            checkpoint.write_atomically(self.run_dir / "config.yaml",
                                        yaml.safe_dump(self.config.dump(), sort_keys=False))
            checkpoint.write_atomically(self.run_dir / "data_report.json", json.dumps(self.data.report, indent=2))
            checkpoint.write_atomically(self.run_dir / provenance.FILE, json.dumps(
                {"hookformer": hookformer.__version__, "parts": assembly.provenance}, indent=2))

    def _import_init_from(self) -> Path:
        """``train.init_from`` names a Hugging Face model directory: ``hookformer import`` it into the hidden run
        directory ``RUN_DIR/.init_from`` (rank 0 first; removed once the weights are loaded), and return that."""
        from hookformer.core.interop import import_hf

        target = self.run_dir / IMPORTED
        # The import builds a model: the RNG stays where the seed put it, so that the run is the imported run's.
        with self.world.main_first(), torch.random.fork_rng(devices=[]):
            if self.world.is_main:
                shutil.rmtree(target, ignore_errors=True)  # left by a start that failed
                import_hf(Path(self.train_cfg.init_from).expanduser(), target, self.config.catalog)
                self.log(f"imported {self.train_cfg.init_from} (train.init_from)")
        return target

    def _load_pretrained(self, source: Path) -> None:
        """Fine-tuning: the pretrained checkpoint's weights, heads excepted."""
        # Tensors the hook parts' build wrappers added (adapters) are not in a pretrained checkpoint.
        added = frozenset(name for names in self.assembly.plugins.hook.hookformer_added_tensors(model=self.model)
                          for name in names)
        fresh, unused = checkpoint.load_pretrained(source, self.model, added)
        notes = [f"initialized from {source}"]
        if fresh:
            notes.append(f"task heads with fresh weights: {', '.join(fresh)}")
        if unused:
            notes.append(f"heads of the checkpoint not used: {', '.join(unused)}")
        self.log("; ".join(notes))

    def _train_stream(self, train):
        """The training batches in ``train.order``: a table drawn in seeded order, or cut into contiguous streams read
        segment by segment; a streaming source hands over its own resumable stream."""
        cfg = self.train_cfg
        memory_length = getattr(self.model, "memory_length", 0)
        if cfg.order == "shuffled":
            if memory_length:
                raise ConfigError(f"model.memory_length is {memory_length} (segment recurrence), but train.order is "
                                  "shuffled: the memory would carry the context of unrelated text into each batch. "
                                  "Set train.order: streams (consecutive segments of contiguous streams), or "
                                  "model.memory_length: 0.")
            return train if self.train_table is None else TableStream(self.train_table, cfg.seed)
        if self.train_table is None:
            raise ConfigError("train.order is streams, but the data source streams its batches itself (a BatchStream) "
                              "and cannot be cut into contiguous streams: use a map-style data source, or "
                              "train.order: shuffled.")
        extra = [name for name in self.train_table if name != "input_ids"]
        if extra:
            raise ConfigError(f"train.order streams reads only input_ids, cutting the text into contiguous streams "
                              f"across examples, but the training examples also have {', '.join(extra)}, which "
                              "belong to single examples: use data options without them (e.g. data.document_mask: "
                              "false), or train.order: shuffled.")
        if cfg.compile:
            raise ConfigError("train.order streams cannot be combined with train.compile yet (the segment memory "
                              "grows over the first segments, so the compiled shapes would change): set "
                              "train.compile: false.")
        if memory_length and not hasattr(self.model, "segment_memory_scope"):
            raise ConfigError("the model has a memory_length but no segment_memory_scope(memory), through which the "
                              "loop hands it its segment memory (see the Model protocol): add it to the model.")
        if not memory_length:
            self.log("note: train.order is streams but the model keeps no memory (model.memory_length 0): each "
                     "segment is trained on without its past")
        try:
            return SegmentStreams(self.train_table["input_ids"], cfg.batch_size * self.world.size)
        except ValueError as exc:
            raise ConfigError(f"train.order streams: {exc}.") from None

    def _segment_memory_scope(self):
        """The context of the next training micro-batch's forward pass, asked before it is drawn: with segment
        recurrence the model reads this rank's memory, a new one where the streams start over and after a resume."""
        if self.train_cfg.order != "streams" or not getattr(self.model, "memory_length", 0):
            return contextlib.nullcontext()
        if self.segment_memory is None or self.train_stream.starts_over:
            self.segment_memory = self.model.new_segment_memory()
        return self.model.segment_memory_scope(self.segment_memory)

    def _freeze_backbone(self) -> None:
        """``train.freeze_backbone``: only the task heads (``heads.*``) keep requires_grad."""
        trainable = 0
        for name, param in self.model.named_parameters():
            param.requires_grad_(name.startswith("heads."))
            trainable += param.numel() if param.requires_grad else 0
        if not trainable:
            raise ConfigError("train.freeze_backbone is true, but the model has no task head to train (the objective "
                              "attaches none); use an objective with a head, such as classification.")

    def _probe_metrics(self, probe) -> dict[str, float]:
        """The values the metrics give for the probe's result: a metric that cannot score this objective fails now,
        and so do two metrics that report the same key (the second would silently overwrite the first)."""
        values, reported_by = {}, {}
        for index, (choice, metric) in enumerate(zip(self.config.metrics, self.metrics)):
            metric.reset()
            metric.update(probe)
            for key, value in metric.compute().items():
                if key in reported_by:
                    raise ConfigError(f'metrics[{reported_by[key]}] and metrics[{index}] ({choice.name}) both report '
                                      f'"{key}": keep one of them, or give them options that report different keys.')
                reported_by[key] = index
                values[f"val_{key}"] = value
        return values

    def _early_stopping(self, values: dict[str, float]) -> EarlyStopping | None:
        """The early stopping of ``train.early_stopping``, its metric checked against the ``values`` the metrics gave
        for the probe's result (so a wrong name fails now, not at the first evaluation)."""
        config = self.train_cfg.early_stopping
        if config is None:
            return None
        if self.world.sharded:
            raise ConfigError("train.early_stopping cannot restore the best weights into a model sharded by FSDP2 yet; "
                              "use train.distributed.strategy ddp, or leave early_stopping out.")
        early_stopping = EarlyStopping(config)
        early_stopping.check(values)
        return early_stopping

    def _probe_model(self):
        """One forward pass in training mode on a real block, so that a part that cannot run this configuration
        (e.g. a kernel without dropout) fails now, before the run starts; RNG state is restored afterwards. Returns
        the objective's result."""
        devices = [torch.device(self.device).index or 0] if self.device == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad(), self._autocast():
            self.model.train()
            return compute(self.objective, self.model, self._batch(table_rows(self.val_table, slice(0, 1))))

    def _trainer_state(self) -> dict:
        return {
            "step": self.step,
            "optimizer": self.world.optimizer_state(self.model, self.optimizer),
            "scheduler": self.scheduler.state_dict(),
            "data_position": self.train_stream.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python_rng": random.getstate(),
            "early_stopping": self.early_stopping.state_dict() if self.early_stopping is not None else None,
        }

    def _restore(self, path: Path, state: dict) -> None:
        if "imported_from" in checkpoint.manifest(path):  # `hookformer import` saves weights only: the rest starts fresh
            self.step = state["step"]
            self.log(f"continuing the imported weights of {path}; optimizer, schedule and data order start fresh")
            return
        try:
            self.world.load_optimizer_state(self.model, self.optimizer, state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.train_stream.load_state_dict(state["data_position"])
            torch.set_rng_state(state["torch_rng"])
            if state["cuda_rng"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda_rng"])
            random.setstate(state["python_rng"])
        except ValueError as exc:
            raise CheckpointError(f"cannot resume from {path}: {exc}.") from None
        except KeyError as exc:
            raise CheckpointError(f"cannot resume from {path}: its trainer state has no {exc} entry.") from None
        if self.early_stopping is not None and state.get("early_stopping") is not None:
            self.early_stopping.load_state_dict(state["early_stopping"])
        self.step = state["step"]
        if self.train_cfg.max_steps < self.step:
            raise ConfigError(f"train.max_steps is {self.train_cfg.max_steps}, but {path} is at step {self.step}: "
                              f"a resumed run continues up to max_steps; set it to {self.step} or more.")
        if self.world.is_main:
            self._truncate_metrics(self.step)
        self.log(f"resumed from {path} at step {self.step}")

    def _truncate_metrics(self, step: int) -> None:
        """Drop records written after the checkpoint by the interrupted run, so the history has no duplicates."""
        runfiles.truncate_metrics(self.run_dir, step)

    # -- events and output ------------------------------------------------------------------------------------
    def log(self, message: str) -> None:
        if not self.world.is_main:
            return
        (self._bar.write if self._bar is not None else print)(message, file=sys.stderr)

    def view(self) -> RunView:
        """The read-only view of the run that run events receive."""
        return RunView(step=self.step, config=self.config.dump(), run_dir=self.run_dir, model=self.model,
                       loss_unit=getattr(self.objective, "loss_unit", "token"), log=self.log)

    def _emit(self, event: str, **arguments) -> None:
        """Run event ``event`` for the run's hook parts, on the rank that writes the run's files."""
        if self.world.is_main:
            self.assembly.emit(event, run=self.view(), **arguments)

    def _record(self, record: dict) -> None:
        if not self.world.is_main:
            return
        runfiles.append_record(self.run_dir, record)

    def _autocast(self):
        if not self.train_cfg.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device, dtype=torch.bfloat16)

    # -- training ---------------------------------------------------------------------------------------------
    def _batch(self, rows: dict) -> dict:
        return {name: tensor.to(self.device, non_blocking=True) for name, tensor in rows.items()}

    def train_step(self) -> tuple[float, int]:
        """One optimizer step over ``grad_accum_steps`` micro-batches. Returns (mean loss per item, tokens seen)."""
        cfg, world = self.train_cfg, self.world
        self.model.train()
        # Every rank draws the same global micro-batch and trains on its slice: the data position stays the same on
        # every rank, and the step equals a single process's with batch_size x ranks.
        # With train.order streams a rank's rows are its own streams, and micro-batches are consecutive segments.
        mine = slice(world.rank * cfg.batch_size, (world.rank + 1) * cfg.batch_size)
        batches, scopes = [], []
        for _ in range(cfg.grad_accum_steps):
            scopes.append(self._segment_memory_scope())
            batches.append(self._batch(table_rows(self.train_stream.next_batch(cfg.batch_size * world.size), mine)))
        loss_sum, items, tokens = accumulate_gradients(self.train_model, self.objective, batches, self._autocast,
                                                       world, scopes)
        params = [p for p in self.model.parameters() if p.grad is not None]
        self.last_grad_norm = None
        if cfg.clip_grad_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm)
            self.last_grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # FSDP2
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return loss_sum / max(1, items), tokens

    def evaluate(self) -> dict:
        """Run the metrics over the first ``eval_batches`` validation batches (the same ones every time); metrics of
        generated text generate for their own number of validation examples."""
        cfg = self.train_cfg
        return evaluate(self.model, self.objective, self.metrics, self.val_table, batch_size=cfg.batch_size,
                        max_examples=cfg.eval_batches * cfg.batch_size, device=self.device, autocast=self._autocast,
                        tokenizer=self.tokenizer)

    def baselines(self) -> dict[str, float]:
        """What the objective scores without looking at the input (see the Objective protocol), on the evaluation
        examples."""
        baseline = getattr(self.objective, "baseline", None)
        if baseline is None:
            return {}
        cfg = self.train_cfg
        evaluated = table_rows(self.val_table, slice(0, cfg.eval_batches * cfg.batch_size))
        return baseline(self.train_table if self.train_table is not None else self.train_stream, evaluated)

    def save_checkpoint(self, best: bool = False) -> Path | None:
        """Rank 0 writes the checkpoint (the full state is gathered from every rank first), marked as the best
        evaluation's with ``best``; returns its path there."""
        weights, state = self.world.checkpoint_weights(self.model), self._trainer_state()
        path = None
        if self.world.is_main:
            path = checkpoint.save(self.run_dir, self.step, weights, state, self.train_cfg.keep_checkpoints,
                                   meta={"shapes": Shapes(self.model.vocab_size, self.model.max_seq_len).to_dict(),
                                         "config_sha256": checkpoint.config_hash(self.config.dump())}, best=best)
            self._emit("checkpoint_saved", path=path)
        self.world.barrier()  # no rank runs ahead of a checkpoint that is not on disk yet
        return path

    def train(self) -> dict:
        cfg = self.train_cfg
        n_params = sum(p.numel() for p in self.model.parameters())
        baselines = self.baselines()
        if not self.resume:
            self._record({"step": 0, **baselines, "parameters": n_params})
        train_size = f"{len(self.train_table['input_ids'])}" if self.train_table is not None else "streamed"
        self.log(f"model: {n_params / 1e6:.2f}M parameters; data: {train_size} train / "
                 f"{len(self.val_table['input_ids'])} validation examples of {self.data.block_size} tokens; device "
                 f"{self.device}" + "".join(f"; baseline {k} {v:.3f}" for k, v in baselines.items()))
        self._emit("run_start")
        last_eval: dict = {}
        self._bar = tqdm(total=cfg.max_steps, initial=self.step, disable=not (cfg.progress and self.world.is_main),
                         unit="step", dynamic_ncols=True, file=sys.stderr,
                         mininterval=0.5 if sys.stderr.isatty() else 30.0)  # a log file gets a line per 30 s
        stopping = None  # the signal that asked the run to stop (core/interrupt.py)
        try:
            window_start, window_tokens = time.perf_counter(), 0
            while self.step < cfg.max_steps and not self._stopped_early() and stopping is None:
                loss, tokens = self.train_step()
                window_tokens += tokens
                if not math.isfinite(loss):
                    raise HookformerError(f"the training loss became {loss} at step {self.step}; lower "
                                          f"optimizer.lr" + (" or train.clip_grad_norm" if cfg.clip_grad_norm
                                                             else " or set train.clip_grad_norm") + ".")
                self._bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    elapsed = time.perf_counter() - window_start
                    record = {"step": self.step, "loss": loss, "lr": self.scheduler.get_last_lr()[0],
                              "grad_norm": self.last_grad_norm, "tokens_per_s": window_tokens / max(elapsed, 1e-9)}
                    self._record(record)
                    self._bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{record['tokens_per_s']:,.0f}", refresh=False)
                    self._emit("step_end", record=record)
                    window_start, window_tokens = time.perf_counter(), 0
                best = False
                if self.step % cfg.eval_every == 0 or self.step == cfg.max_steps:
                    last_eval = {"step": self.step, **self.evaluate()}
                    self._record(last_eval)
                    self.log("step {step}: ".format(**last_eval) + ", ".join(
                        f"{k} {v:.4f}" for k, v in last_eval.items() if k != "step"))
                    self._emit("eval_end", record=last_eval)
                    best = self.early_stopping is not None and self.early_stopping.update(last_eval)
                stopping = interrupt.requested_by_any(self.world)
                if (best or self._stopped_early() or self.step % cfg.checkpoint_every == 0
                        or self.step == cfg.max_steps or (stopping and cfg.checkpoint_on_interrupt)):
                    self.save_checkpoint(best=best)
        finally:
            self._bar.close()
            self._bar = None
        if stopping is not None:
            newest = checkpoint.newest(self.run_dir)
            raise interrupt.stopped(stopping, self.step, self.run_dir, newest.name if newest else None)
        if self.early_stopping is not None:
            last_eval = self._restore_best()
        self.write_samples()
        summary = {"step": self.step, **baselines, **last_eval}
        self._emit("run_end", summary=summary)
        return summary

    def _stopped_early(self) -> bool:
        return self.early_stopping is not None and self.early_stopping.should_stop

    def _restore_best(self) -> dict:
        """Early stopping: load the best evaluation's weights into the model; returns that evaluation's record with
        ``best_step``, the step the weights come from."""
        best = self.early_stopping.best
        if best is None:  # no evaluation yet: early stopping added when resuming a run that had nothing left to do
            return {}
        checkpoint.load_weights(checkpoint.best(self.run_dir), self.model)
        stopped = f"stopped early at step {self.step}" if self._stopped_early() else f"ended at step {self.step}"
        self.log(f"{stopped}; restored the weights of step {best['step']}, the best evaluation "
                 f"({self.early_stopping.config.metric} {best[self.early_stopping.config.metric]:.4f})")
        return {**{k: v for k, v in best.items() if k != "step"}, "best_step": best["step"]}

    def write_samples(self) -> None:
        """samples.txt: a greedy and two sampled continuations of ``train.sample_prompt`` (an encoder-decoder
        translates it: the prompt is its source)."""
        cfg = self.train_cfg
        if cfg.sample_tokens == 0:
            return
        encoder_decoder = is_encoder_decoder(self.model)
        if not encoder_decoder and not is_decoder(self.model):
            self.log("no samples: the model is an encoder (model.causal: false), and text generation needs a decoder")
            return
        if encoder_decoder:
            prompt, sources = [self.tokenizer.special.bos], [encode_source(self.tokenizer, cfg.sample_prompt)]
        else:
            prompt, sources = self.tokenizer.encode(cfg.sample_prompt) or [self.tokenizer.special.eos], None
        sampled = Decoding(max_new_tokens=cfg.sample_tokens, temperature=cfg.sample_temperature,
                           top_k=cfg.sample_top_k, seed=cfg.seed)
        kinds = [("greedy", sampled.model_copy(update={"greedy": True}), 1),
                 (f"sampled (temperature {cfg.sample_temperature}, top-k {cfg.sample_top_k})", sampled, 2)]
        texts = []
        for title, decoding, count in kinds:
            outputs = generate(self.model, [prompt] * count, decoding, tokenizer=self.tokenizer,
                               sources=None if sources is None else sources * count, device=self.device)
            for ids in outputs:
                texts.append(f"--- {title} ---\n{self.tokenizer.decode(ids if encoder_decoder else prompt + ids)}\n")
        output = "".join(texts)
        if not self.world.is_main:
            return
        checkpoint.write_atomically(self.run_dir / "samples.txt", output)
        self.log(f"samples (prompt {cfg.sample_prompt!r}), saved to {self.run_dir / 'samples.txt'}:\n{output}")
