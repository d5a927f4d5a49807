"""Hook part ``loss_curve``: plot training and validation loss to a PNG in the run directory, after every evaluation
and at the end of the run (run events ``hookformer_eval_end`` and ``hookformer_run_end``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from hookformer.core.hookspecs import hookimpl
from hookformer.core.parts import PartOptions, RunView


class LossCurveOptions(PartOptions):
    filename: str = Field("loss.png", description="image file written in the run directory")
    log_y: bool = Field(False, description="logarithmic loss axis")


class LossCurve:
    def __init__(self, options: LossCurveOptions, run_dir: Path):
        self.options = options
        self.run_dir = Path(run_dir)

    def plot(self, loss_unit: str = "token") -> Path | None:
        """Draw the curves from metrics.jsonl (so a resumed run plots its whole history); the loss axis is in nats
        per ``loss_unit`` (the objective's, see Objective)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from hookformer.core.runfiles import METRICS, read_records

        records = read_records(self.run_dir / METRICS)  # a torn last line (a crash) is skipped
        train = [(r["step"], r["loss"]) for r in records if "loss" in r]
        val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
        if not train and not val:
            return None
        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
        if train:
            ax.plot(*zip(*train), label="train loss", linewidth=1.2)
        if val:
            ax.plot(*zip(*val), "o-", label="validation loss", linewidth=1.5)
        # Baselines (Objective.baseline) are on the first record: e.g. unigram_val_loss.
        baselines = {key: value for key, value in (records[0] if records else {}).items() if key.endswith("_val_loss")}
        for (key, value), style in zip(sorted(baselines.items()), ("--", ":", "-.")):
            ax.axhline(value, color="gray", linestyle=style, linewidth=1,
                       label=key.removesuffix("_val_loss").replace("_", " ") + " baseline")
        if self.options.log_y:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(f"loss (nats per {loss_unit})")
        ax.set_title(f"hookformer run: {self.run_dir.name}")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = self.run_dir / self.options.filename
        tmp = path.with_suffix(".tmp.png")
        fig.savefig(tmp)
        plt.close(fig)
        tmp.replace(path)
        return path

    @hookimpl
    def hookformer_eval_end(self, run: RunView) -> None:
        self.plot(run.loss_unit)

    @hookimpl
    def hookformer_run_end(self, run: RunView) -> None:
        path = self.plot(run.loss_unit)
        if path is not None:
            run.log(f"loss curve: {path}")


def build(options: LossCurveOptions, ctx) -> LossCurve:
    return LossCurve(options, ctx.run_dir)
