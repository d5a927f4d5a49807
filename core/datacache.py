"""What data caching needs, shared by the engine's cleaning chain and the data parts: stable short hashes for cache
keys and fingerprints, and a quiet `datasets` while it writes or reads them."""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Iterator

import datasets


def digest(*parts: object) -> str:
    """A short stable hash of JSON-serializable parts (cache keys, fingerprints)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:40]


@contextlib.contextmanager
def quiet_datasets() -> Iterator[None]:
    """Silence datasets' progress bars and logging for the duration; restore them after (not ours to keep). Its error
    logs go too: a failure reaches the user as our DataError, which names the file, not as a second message."""
    bars_were_on = not datasets.are_progress_bars_disabled()
    verbosity = datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    try:
        yield
    finally:
        datasets.logging.set_verbosity(verbosity)
        if bars_were_on:
            datasets.enable_progress_bars()
