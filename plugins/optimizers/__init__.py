"""Built-in optimizers (torch.optim, and Muon), with no weight decay on norms, biases and embeddings by default."""

from hookformer.core.hookspecs import hookimpl
from hookformer.core.parts import PartSpec

_HERE = __name__


@hookimpl
def hookformer_parts():
    return [
        PartSpec("optimizer", "adamw", "torch.optim.AdamW", factory=f"{_HERE}.adamw:build",
                 options=f"{_HERE}.adamw:AdamWOptions"),
        PartSpec("optimizer", "sgd", "torch.optim.SGD with momentum", factory=f"{_HERE}.sgd:build",
                 options=f"{_HERE}.sgd:SGDOptions"),
        PartSpec("optimizer", "muon", "Muon (orthogonalized momentum) for the hidden weight matrices, AdamW for "
                 "embeddings, output layers, norms and biases: one optimizer", factory=f"{_HERE}.muon:build",
                 options=f"{_HERE}.muon:MuonOptions"),
    ]
