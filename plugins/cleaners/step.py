"""What the built-in cleaning steps share: a name, the options they were built with, and a fingerprint of both.

A step that works document by document overrides :meth:`CleaningStep.clean`; a step that works on a whole batch at
once (vectorized, or keeping state across documents) overrides ``__call__``. Third-party steps need not use this
class: the chain only relies on the :class:`~hookformer.core.parts.Cleaner` protocol.
"""

from __future__ import annotations

import hashlib
import json

from hookformer.core.parts import PartOptions


class CleaningStep:
    """Base of the built-in steps. ``name`` is the part's registered name (it labels the step in the report)."""

    name: str = ""
    stateful: bool = False
    #: Part of the fingerprint: bump it when the step's output for the same options changes.
    version: int = 1

    def __init__(self, options: PartOptions):
        self.options = options

    def __call__(self, texts: list[str]) -> list[str | None]:
        clean = self.clean
        return [clean(text) for text in texts]

    def clean(self, text: str) -> str | None:
        """One document's cleaned text, or None to remove it."""
        raise NotImplementedError(f"{type(self).__name__} cleans whole batches in __call__")

    def fingerprint(self) -> str:
        spec = [self.name, self.version, self.options.model_dump(mode="json")]
        return f"{self.name}-" + hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
