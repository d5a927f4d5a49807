"""Graceful stop on SIGTERM and SIGINT (Ctrl-C): the first signal asks the training loop to stop at the next step
boundary (after writing a checkpoint, unless ``train.checkpoint_on_interrupt`` is false) and exit with the
conventional code 128 + the signal's number (130 for SIGINT, 143 for SIGTERM). A second signal gets the signal's
default action: the kernel ends the process at once, even inside a long operation where no Python handler would run
(the checkpoints stay whole, a torn metrics line is repaired and temporaries are removed at the next start).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []  # the signal received inside graceful_stop()


class Interrupted(BaseException):
    """The run stopped because of a signal. A BaseException, like KeyboardInterrupt, so that no ``except Exception``
    on the way up swallows it."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def requested() -> int | None:
    """The signal that asked for a stop, or None."""
    return _received[0] if _received else None


def _handle(signum: int, frame) -> None:
    _received.append(signum)
    for other in SIGNALS:  # the next one stops the process at once
        signal.signal(other, signal.SIG_DFL)
    print(f"hookformer: {signal.Signals(signum).name} received: stopping after the current step (send it again to "
          f"stop at once).", file=sys.stderr, flush=True)


@contextlib.contextmanager
def graceful_stop() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into a stop request (see :func:`requested`) inside the block. Signal handlers can only
    be set from the main thread; elsewhere the block runs with the handlers it has."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _handle) for signum in SIGNALS}
    _received.clear()
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _received.clear()


def requested_by_any(world) -> int | None:
    """:func:`requested` agreed over the ranks of ``world`` (every rank stops at the same step, or a collective of
    the checkpoint would wait forever): a rank that received no signal itself takes SIGTERM."""
    own = requested()
    if world.size == 1:
        return own
    return own or (signal.SIGTERM if world.sum(float(own or 0))[0] else None)


def stopped(signum: int, step: int, run_dir, newest_checkpoint: str | None) -> Interrupted:
    """The Interrupted that reports a stop at ``step`` for ``signum``."""
    saved = f"its newest checkpoint is {newest_checkpoint}" if newest_checkpoint else "it has no checkpoint yet"
    return Interrupted(signum, f"{signal.Signals(signum).name} received: the run stopped at step {step} and "
                               f"{saved}; continue it with --resume {run_dir}.")
