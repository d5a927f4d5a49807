"""Text generation from a trained language model: greedy or temperature / top-k sampling."""

from __future__ import annotations

from pathlib import Path

import torch


@torch.no_grad()
def generate(model, ids: list[int], max_new_tokens: int, *, temperature: float = 1.0, top_k: int | None = None,
             greedy: bool = False, stop_id: int | None = None, generator: torch.Generator | None = None,
             device: str = "cpu") -> list[int]:
    """Extend ``ids`` by up to ``max_new_tokens`` tokens; the context is cropped to the model's ``max_seq_len``."""
    was_training = model.training
    model.eval()
    out = torch.tensor([ids], dtype=torch.long, device=device)
    for _ in range(max_new_tokens):
        logits = model(out[:, -model.max_seq_len:])[:, -1, :].float()
        if greedy:
            next_id = logits.argmax(dim=-1, keepdim=True)
        else:
            logits = logits / temperature
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits, dim=-1)
            next_id = torch.multinomial(probs.cpu(), 1, generator=generator).to(device)
        out = torch.cat([out, next_id], dim=1)
        if stop_id is not None and int(next_id) == stop_id:
            break
    model.train(was_training)
    return out[0].tolist()


def load_trained(run_dir: Path, config, device: str = "cpu", checkpoint: str | None = None):
    """(tokenizer, model) of a run's latest checkpoint (or the one ``checkpoint`` names: see checkpoint.find), rebuilt
    from its config without reading the training data. Generation needs the backbone and its language-model head
    only: task heads a fine-tuned run saved (``heads.*``) are not loaded, and an encoder is refused."""
    from hookformer.core import checkpoint as checkpoints
    from hookformer.core.assemble import Assembly
    from hookformer.core.errors import ConfigError
    from hookformer.core.parts import is_decoder

    path = checkpoints.find(run_dir, checkpoint)
    checkpoints.verify(path)  # before its manifest decides the model's shapes
    assembly = Assembly(config, run_dir, device=device, checkpoint=path)
    tokenizer, model = assembly.tokenizer(), assembly.model()
    if not is_decoder(model):
        raise ConfigError(f"{run_dir} holds an encoder (its model part {config.parts['model'].name} is not causal; "
                          f"objective {config.parts['objective'].name}): text generation continues a text left to "
                          "right and needs a decoder. Score the run with `hookformer evaluate` instead.")
    checkpoints.load_pretrained(path, model)
    return tokenizer, model.eval()
