"""Two hook parts written only against hookformer's public API (hookformer.core.hookspecs, hookformer.core.parts).

- ``freeze_blocks``, a build wrapper: after the engine builds the model, every parameter but those of the last
  ``trainable_blocks`` Transformer blocks stops receiving gradients (task heads, attached later by the objective,
  still train). ``hooks: [{name: freeze_blocks, trainable_blocks: 1}]``
- ``tensorboard``, run events: every record written to ``metrics.jsonl`` (training and evaluation) also goes to
  TensorBoard event files in ``RUN_DIR/tensorboard`` (``tensorboard --logdir RUN_DIR/tensorboard``).
  ``hooks: [loss_curve, tensorboard]``
"""

from __future__ import annotations

from pydantic import Field

from hookformer.core.errors import ConfigError
from hookformer.core.hookspecs import hookimpl
from hookformer.core.parts import PartOptions, PartSpec, RunView

HOOKFORMER_API = ">=1.0,<2"


class FreezeBlocksOptions(PartOptions):
    trainable_blocks: int = Field(1, ge=1, description="how many of the last blocks keep training")
    blocks_attribute: str = Field("blocks", description="the model's list of blocks (an nn.ModuleList)")


class FreezeBlocks:
    def __init__(self, options: FreezeBlocksOptions):
        self.options = options

    @hookimpl(wrapper=True)
    def hookformer_build(self, stage: str):
        part = yield
        if stage == "model":
            self.freeze(part)
        return part

    def freeze(self, model) -> None:
        blocks = getattr(model, self.options.blocks_attribute, None)
        if blocks is None or len(blocks) < self.options.trainable_blocks:
            raise ConfigError(f"hook freeze_blocks: the model has no list {self.options.blocks_attribute!r} of at "
                              f"least {self.options.trainable_blocks} blocks; set blocks_attribute.")
        trainable = {id(p) for block in blocks[-self.options.trainable_blocks:] for p in block.parameters()}
        for param in model.parameters():
            param.requires_grad_(id(param) in trainable)


class TensorBoardOptions(PartOptions):
    log_dir: str = Field("tensorboard", description="folder of the event files, inside the run directory")


class TensorBoard:
    def __init__(self, options: TensorBoardOptions):
        self.options = options
        self.writer = None

    @hookimpl
    def hookformer_run_start(self, run: RunView) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # A resumed run drops the events its interrupted part wrote after the checkpoint it resumes from.
        self.writer = SummaryWriter(str(run.run_dir / self.options.log_dir), purge_step=run.step or None)

    @hookimpl
    def hookformer_step_end(self, record: dict) -> None:
        self.write(record)

    @hookimpl
    def hookformer_eval_end(self, record: dict) -> None:
        self.write(record)

    @hookimpl
    def hookformer_checkpoint_saved(self) -> None:
        self.writer.flush()  # what a checkpoint holds is also in the event files, should the run be killed

    @hookimpl
    def hookformer_run_end(self) -> None:
        self.writer.close()

    def write(self, record: dict) -> None:
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):  # grad_norm is null without clipping
                self.writer.add_scalar(key, value, record["step"])


@hookimpl
def hookformer_parts():
    return [
        PartSpec("hook", "freeze_blocks", "build wrapper: train only the last blocks of the model (and task heads)",
                 factory=f"{__name__}:build_freeze_blocks", options=f"{__name__}:FreezeBlocksOptions"),
        PartSpec("hook", "tensorboard", "run events: every metrics record as TensorBoard scalars in "
                 "RUN_DIR/tensorboard",
                 factory=f"{__name__}:build_tensorboard", options=f"{__name__}:TensorBoardOptions"),
    ]


def build_freeze_blocks(options: FreezeBlocksOptions, ctx) -> FreezeBlocks:
    return FreezeBlocks(options)


def build_tensorboard(options: TensorBoardOptions, ctx) -> TensorBoard:
    return TensorBoard(options)
