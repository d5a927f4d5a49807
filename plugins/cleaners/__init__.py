"""Built-in cleaning steps (stage ``cleaner``), applied in the order the config's ``cleaning`` list names them."""

from hookformer.core.hookspecs import hookimpl
from hookformer.core.parts import PartSpec

_HERE = __name__


@hookimpl
def hookformer_parts() -> list[PartSpec]:
    return []
