"""The run: assemble the parts named by a validated config, then train, evaluate, checkpoint and sample.

The loop talks to every part only through its stage protocol (core/parts.py), so a built-in part has no advantage
over a third-party one.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from hookformer.core import checkpoint
from hookformer.core.capabilities import CheckedKernel
from hookformer.core.config import RunConfig
from hookformer.core.distributed import World
from hookformer.core.errors import CheckpointError, HookformerError
from hookformer.core.generate import generate
from hookformer.core.parts import BuildContext
from hookformer.core.sampler import BlockSampler


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise HookformerError("train.device is cuda, but torch sees no CUDA device; use train.device=cpu or auto.")
    return name


def accumulate_gradients(model, objective, batches: list[dict], autocast=contextlib.nullcontext,
                         world: World = World()) -> tuple[float, int, int]:
    """Backpropagate the objective over micro-batches and leave the gradient of the mean loss over all their items.

    Objectives return summed losses; the accumulated gradient is divided once by the total item count, so any split
    of a batch into micro-batches gives the gradient of the one large batch. Under data parallelism ``model`` is the
    wrapped module, the totals are over every rank's micro-batches, and the division accounts for the wrapper's
    gradient reduction averaging over the ranks. Returns (loss sum, items, tokens), summed over the ranks.
    """
    loss_sum, items, tokens = 0.0, 0, 0
    for i, batch in enumerate(batches):
        with world.no_sync(model) if i < len(batches) - 1 else contextlib.nullcontext():
            with autocast():
                result = objective(model, batch)
            result.loss_sum.backward()
        loss_sum += float(result.loss_sum.detach())
        items += result.num_items
        tokens += batch["input_ids"].numel()
    loss_sum, items, tokens = world.sum(loss_sum, items, tokens)
    grads = [param.grad for param in model.parameters() if param.grad is not None]
    torch._foreach_div_(grads, max(1.0, items) / world.size)
    return loss_sum, int(items), int(tokens)


def compile_for_training(model, objective, batch: dict, autocast=contextlib.nullcontext):
    """``model`` under ``torch.compile`` with static shapes, compiled now by a forward and backward of ``batch`` in
    training mode (RNG state restored, gradients dropped) rather than during the first step."""
    compiled = torch.compile(model, dynamic=False, backend=_inductor_deterministic_embedding_backward)
    device = batch["input_ids"].device
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        model.train()
        with autocast():
            result = objective(compiled, batch)
        result.loss_sum.backward()
    for param in model.parameters():
        param.grad = None
    return compiled


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
    run's latest checkpoint. Callbacks (the config's plus any appended to ``self.callbacks``) observe it.

    Under torchrun every rank builds a Run with its ``world``; files, logs, the progress bar and callbacks are rank
    0's, and every rank takes part in training, evaluation and sampling (an FSDP2 forward needs all of them)."""

    def __init__(self, config: RunConfig, run_dir: Path, resume: bool = False, world: World = World()):
        self.config = config
        self.train_cfg = config.train
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.world = world
        self.device = resolve_device(self.train_cfg.device)
        self.step = 0
        self.callbacks: list = []
        self._bar = None
        self._setup()

    # -- assembly ---------------------------------------------------------------------------------------------
    def _setup(self) -> None:
        cfg, parts = self.train_cfg, self.config.parts
        self.world.check_same("resolved config", self.config.dump())
        self.run_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        ctx = self.ctx = BuildContext(run_dir=self.run_dir, catalog=self.config.catalog, device=self.device,
                                      seed=cfg.seed, train=cfg, total_steps=cfg.max_steps)
        self.log("preparing data")
        ctx.cleaners = [choice.build(ctx) for choice in self.config.cleaning]
        with self.world.main_first():  # rank 0 writes the data cache and trains the tokenizer; the others load them
            ctx.data = self.data = parts["data"].build(ctx)
            ctx.block_size = self.data.block_size
            ctx.tokenizer = self.tokenizer = parts["tokenizer"].build(ctx)
            blocks = self.data.prepare(self.tokenizer)
        self.train_blocks, self.val_blocks = blocks["train"], blocks["validation"]
        ctx.attention = self.attention = self._attention(ctx)
        ctx.model = self.model = parts["model"].build(ctx).to(self.device)
        self.objective = parts["objective"].build(ctx)
        self._probe_model()
        # Full weights are loaded before FSDP2 shards them; the rest of the state once the optimizer exists.
        saved = self._load_checkpoint() if self.resume else None
        self.train_model = self.world.wrap(self.model, self.device)
        if cfg.compile:
            # Wrapped first, then compiled: Dynamo splits the graph at DDP's gradient buckets (so that their
            # all-reduce overlaps the backward) only when it traces DDP's own forward, and FSDP2 shards the model
            # in place, so the compiled module is the sharded one with its hooks.
            # ``self.model`` stays the plain module: checkpoints keep its parameter names, and evaluation and
            # sampling (other shapes, no grad) run it uncompiled, so only the training batch shape is compiled.
            began = time.perf_counter()
            self.train_model = compile_for_training(self.train_model, self.objective,
                                                    self._batch(self.train_blocks[:1].repeat(cfg.batch_size, 1)),
                                                    self._autocast)
            self.log(f"compiled the model in {time.perf_counter() - began:.1f} s")
        ctx.optimizer = self.optimizer = parts["optimizer"].build(ctx)
        self.scheduler = parts["scheduler"].build(ctx)
        self.metrics = [choice.build(ctx) for choice in self.config.metrics]
        self.callbacks = [choice.build(ctx) for choice in self.config.callbacks] if self.world.is_main else []
        self.sampler = BlockSampler(len(self.train_blocks), cfg.seed)
        if saved is not None:
            self._restore(*saved)
        # Written only once everything is assembled (and restored), so a failed start leaves an existing run as it
        # was; on resume the config keeps the overrides given with --set.
        if self.world.is_main:
            checkpoint.write_atomically(self.run_dir / "config.yaml",
                                        yaml.safe_dump(self.config.dump(), sort_keys=False))
            checkpoint.write_atomically(self.run_dir / "data_report.json", json.dumps(self.data.report, indent=2))

    def _attention(self, ctx):
        """The configured kernel; one that declares capabilities is checked against them on every kind of call."""
        choice = self.config.parts["attention"]
        kernel = choice.build(ctx)
        capabilities = choice.entry.capabilities()
        return kernel if capabilities is None else CheckedKernel(choice.name, kernel, capabilities)

    def _probe_model(self) -> None:
        """One forward pass in training mode on a real block, so that a part that cannot run this configuration
        (e.g. a kernel without dropout) fails now, before the run starts; RNG state is restored afterwards."""
        devices = [torch.device(self.device).index or 0] if self.device == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad(), self._autocast():
            self.model.train()
            self.objective(self.model, self._batch(self.train_blocks[:1]))

    def _trainer_state(self) -> dict:
        return {
            "step": self.step,
            "optimizer": self.world.optimizer_state(self.model, self.optimizer),
            "scheduler": self.scheduler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python_rng": random.getstate(),
        }

    def _load_checkpoint(self) -> tuple[Path, dict]:
        path = checkpoint.latest(self.run_dir)
        return path, checkpoint.load(path, self.model)

    def _restore(self, path: Path, state: dict) -> None:
        try:
            self.world.load_optimizer_state(self.model, self.optimizer, state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.sampler.load_state_dict(state["sampler"])
        except ValueError as exc:
            raise CheckpointError(f"cannot resume from {path}: {exc}.") from None
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        random.setstate(state["python_rng"])
        self.step = state["step"]
        if self.world.is_main:
            self._truncate_metrics(self.step)
        self.log(f"resumed from {path} at step {self.step}")

    def _truncate_metrics(self, step: int) -> None:
        """Drop records written after the checkpoint by the interrupted run, so the history has no duplicates."""
        path = self.run_dir / "metrics.jsonl"
        if path.exists():
            kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
            checkpoint.write_atomically(path, "".join(line + "\n" for line in kept))

    # -- events and output ------------------------------------------------------------------------------------
    def log(self, message: str) -> None:
        if not self.world.is_main:
            return
        (self._bar.write if self._bar is not None else print)(message, file=sys.stderr)

    def _emit(self, event: str, *args) -> None:
        for callback in self.callbacks:
            handler = getattr(callback, event, None)
            if handler is not None:
                handler(self, *args)

    def _record(self, record: dict) -> None:
        if not self.world.is_main:
            return
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def _autocast(self):
        if not self.train_cfg.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device, dtype=torch.bfloat16)

    # -- training ---------------------------------------------------------------------------------------------
    def _batch(self, blocks: torch.Tensor) -> dict:
        return {"input_ids": blocks.to(self.device, non_blocking=True)}

    def train_step(self) -> tuple[float, int]:
        """One optimizer step over ``grad_accum_steps`` micro-batches. Returns (mean loss per item, tokens seen)."""
        cfg, world = self.train_cfg, self.world
        self.model.train()
        # Every rank draws the same global micro-batch and trains on its slice: the data position stays the same on
        # every rank, and the step equals a single process's with batch_size x ranks.
        mine = slice(world.rank * cfg.batch_size, (world.rank + 1) * cfg.batch_size)
        batches = [self._batch(self.train_blocks[self.sampler.next_batch(cfg.batch_size * world.size)[mine]])
                   for _ in range(cfg.grad_accum_steps)]
        loss_sum, items, tokens = accumulate_gradients(self.train_model, self.objective, batches, self._autocast,
                                                       world)
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

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Run the metrics over the first ``eval_batches`` validation batches (the same ones every time)."""
        cfg = self.train_cfg
        self.model.eval()
        for metric in self.metrics:
            metric.reset()
        for start in range(0, min(len(self.val_blocks), cfg.eval_batches * cfg.batch_size), cfg.batch_size):
            batch = self._batch(self.val_blocks[start:start + cfg.batch_size])
            with self._autocast():
                result = self.objective(self.model, batch)
            for metric in self.metrics:
                metric.update(result)
        values: dict = {}
        for metric in self.metrics:
            values.update({f"val_{key}": value for key, value in metric.compute().items()})
        return values

    def unigram_baseline(self) -> float:
        """Validation loss of the best model that ignores context: training-set token frequencies (add-one)."""
        counts = torch.bincount(self.train_blocks.flatten(), minlength=self.tokenizer.vocab_size).double() + 1.0
        log_probs = counts.log() - counts.sum().log()
        cfg = self.train_cfg
        targets = self.val_blocks[: cfg.eval_batches * cfg.batch_size, 1:].flatten()
        return float(-log_probs[targets].mean())

    def save_checkpoint(self) -> Path | None:
        """Rank 0 writes the checkpoint (the full state is gathered from every rank first); returns its path there."""
        weights, state = self.world.checkpoint_weights(self.model), self._trainer_state()
        path = None
        if self.world.is_main:
            path = checkpoint.save(self.run_dir, self.step, weights, state, self.train_cfg.keep_checkpoints,
                                   meta={"block_size": self.data.block_size})
            self._emit("on_checkpoint_saved", path)
        self.world.barrier()  # no rank runs ahead of a checkpoint that is not on disk yet
        return path

    def train(self) -> dict:
        cfg = self.train_cfg
        n_params = sum(p.numel() for p in self.model.parameters())
        baseline = self.unigram_baseline()
        if not self.resume:
            self._record({"step": 0, "unigram_val_loss": baseline, "parameters": n_params})
        self.log(f"model: {n_params / 1e6:.2f}M parameters; data: {len(self.train_blocks)} train / "
                 f"{len(self.val_blocks)} validation blocks of {self.data.block_size} tokens; device {self.device}; "
                 f"unigram baseline val loss {baseline:.3f}")
        self._emit("on_run_start")
        last_eval: dict = {}
        self._bar = tqdm(total=cfg.max_steps, initial=self.step, disable=not (cfg.progress and self.world.is_main),
                         unit="step", dynamic_ncols=True, file=sys.stderr,
                         mininterval=0.5 if sys.stderr.isatty() else 30.0)  # a log file gets a line per 30 s
        try:
            window_start, window_tokens = time.perf_counter(), 0
            while self.step < cfg.max_steps:
                loss, tokens = self.train_step()
                window_tokens += tokens
                if not math.isfinite(loss):
                    raise HookformerError(f"the training loss became {loss} at step {self.step}; lower "
                                          f"optimizer.lr or set train.clip_grad_norm.")
                self._bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    elapsed = time.perf_counter() - window_start
                    record = {"step": self.step, "loss": loss, "lr": self.scheduler.get_last_lr()[0],
                              "grad_norm": self.last_grad_norm, "tokens_per_s": window_tokens / max(elapsed, 1e-9)}
                    self._record(record)
                    self._bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{record['tokens_per_s']:,.0f}", refresh=False)
                    self._emit("on_step_end", record)
                    window_start, window_tokens = time.perf_counter(), 0
                if self.step % cfg.eval_every == 0 or self.step == cfg.max_steps:
                    last_eval = {"step": self.step, **self.evaluate()}
                    self._record(last_eval)
                    self.log("step {step}: ".format(**last_eval) + ", ".join(
                        f"{k} {v:.4f}" for k, v in last_eval.items() if k != "step"))
                    self._emit("on_eval_end", last_eval)
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.max_steps:
                    self.save_checkpoint()
        finally:
            self._bar.close()
            self._bar = None
        self.write_samples()
        self._emit("on_run_end")
        return {"step": self.step, "unigram_val_loss": baseline, **last_eval}

    def write_samples(self) -> None:
        cfg = self.train_cfg
        if cfg.sample_tokens == 0:
            return
        prompt = self.tokenizer.encode(cfg.sample_prompt) or [self.tokenizer.special.eos]
        generator = torch.Generator().manual_seed(cfg.seed)
        kinds = [("greedy", {"greedy": True})] + [
            (f"sampled (temperature {cfg.sample_temperature}, top-k {cfg.sample_top_k})",
             {"temperature": cfg.sample_temperature, "top_k": cfg.sample_top_k}) for _ in range(2)]
        texts = []
        for title, how in kinds:
            ids = generate(self.model, prompt, cfg.sample_tokens, generator=generator, device=self.device, **how)
            texts.append(f"--- {title} ---\n{self.tokenizer.decode(ids)}\n")
        output = "".join(texts)
        if not self.world.is_main:
            return
        checkpoint.write_atomically(self.run_dir / "samples.txt", output)
        self.log(f"samples (prompt {cfg.sample_prompt!r}), saved to {self.run_dir / 'samples.txt'}:\n{output}")
