"""Built-in attention kernels."""

from hookformer.core.hookspecs import hookimpl
from hookformer.core.parts import PartSpec

_HERE = __name__


@hookimpl
def hookformer_parts():
    return [
        PartSpec("attention", "naive", "softmax(QK^T * scale) V written out: the reference every kernel is checked "
                 "against", factory=f"{_HERE}.naive:build"),
        PartSpec("attention", "sdpa", "torch.nn.functional.scaled_dot_product_attention",
                 factory=f"{_HERE}.sdpa:build"),
    ]
