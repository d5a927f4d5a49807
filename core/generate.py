"""The generation engine: greedy, sampled (temperature, top-k, top-p, repetition penalty) and beam search decoding of
a batch of prompts of different lengths, by decoders and encoder-decoders, with the model's KV cache or by
recomputing the whole context at every step. ``hookformer generate``, the end-of-run samples and generation-based
evaluation all decode through :func:`generate`."""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hookformer.core.errors import ConfigError
from hookformer.core.parts import is_decoder

# HF's score of an impossible beam: finite, so that sums and the length penalty stay ordered.
IMPOSSIBLE = -1.0e9


class Decoding(BaseModel):
    """How :func:`generate` chooses tokens. ``num_beams`` > 1 is beam search (deterministic: temperature, top-k and
    top-p are not used); otherwise ``greedy`` takes the most likely token and sampling draws from the logits shaped
    by ``temperature``, ``top_k`` and ``top_p``, in that order (as transformers does)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    max_new_tokens: int = Field(64, ge=0, description="generate at most this many tokens per prompt")
    greedy: bool = Field(False, description="always take the most likely token (ties: the lowest id)")
    temperature: float = Field(1.0, gt=0.0, description="sampling: divide the logits by this (below 1: sharper)")
    top_k: int | None = Field(None, gt=0, description="sampling: draw from the k most likely tokens only; null: all")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="sampling (nucleus): draw from the smallest set of "
                                "most likely tokens whose probability is at least p; null: all")
    repetition_penalty: float = Field(1.0, gt=0.0, description="CTRL's penalty for the ids already in the prompt or "
                                      "the output: their positive logits are divided by it, negative ones multiplied "
                                      "(above 1: fewer repeats; 1: off)")
    num_beams: int = Field(1, ge=1, description="beam search with this many beams (at most the vocabulary size); "
                           "1: greedy or sampling")
    length_penalty: float = Field(1.0, description="beam search: a finished hypothesis scores its summed log-"
                                  "probability / generated length ** length_penalty (above 0 favours longer ones)")
    stop_strings: list[str] = Field([], description="end a continuation where its text first contains one of these; "
                                    "the string and what follows are removed")
    stop_token_ids: list[int] = Field([], description="end a continuation at one of these ids (removed with what "
                                      "follows), besides eos")
    stop_at_eos: bool = Field(True, description="end a continuation at the tokenizer's eos (removed)")
    seed: int = Field(0, ge=0, lt=2**32, description="sampling seed: prompt i of a call draws from its own "
                      "generator seeded from (seed, i): the other prompts of a batch do not change its draws")
    use_cache: bool = Field(True, description="keep the keys and values of past tokens (the model's KV cache) "
                            "instead of recomputing the whole context at every step; the same tokens either way")

    @classmethod
    def of(cls, values: dict, where: str = "decoding") -> Decoding:
        """Validate ``values``; a bad one is a ConfigError naming ``where.field``."""
        from hookformer.core.config import _error_lines

        try:
            return cls(**values)
        except ValidationError as exc:
            raise ConfigError("invalid decoding options: " + "; ".join(_error_lines(where, exc)) + ".") from None


def is_encoder_decoder(model) -> bool:
    """Whether ``model`` encodes a source and decodes a target attending to it (``model.encoder_decoder``)."""
    return bool(getattr(model, "encoder_decoder", False))


@torch.no_grad()
def encode_source(tokenizer, text: str) -> list[int]:
    """The encoder input of an encoder-decoder for ``text``: its ids followed by eos, as the sequence-to-sequence
    data parts write every source (``pairs``, ``code_summaries``), so generation sees what training saw."""
    return [*tokenizer.encode(text), tokenizer.special.eos]


def generate(model, prompts: list[list[int]], decoding: Decoding, *, tokenizer,
             sources: list[list[int]] | None = None, device: str = "cpu",
             on_token: Callable[[int, int], None] | None = None) -> list[list[int]]:
    """The continuation of each prompt: its new ids only, without the stop token or string that ended it and what
    follows. The prompts are left-padded into one batch. ``sources``: the encoder inputs of an encoder-decoder, one
    per prompt (the prompts are then decoder prefixes, usually ``[bos]``). ``on_token(row, id)`` is called with
    each new token as it is chosen (greedy and sampling; beam search knows its result only at the end). Context
    longer than the model's ``max_seq_len`` is cropped to its last ``max_seq_len`` tokens."""
    stops = _Stops(tokenizer, decoding)
    _check(model, prompts, decoding, sources)
    if decoding.max_new_tokens == 0 or not prompts:
        return [[] for _ in prompts]
    was_training = model.training
    model.eval()
    try:
        context = _Context(model, prompts, sources, decoding.use_cache, device)
        if decoding.num_beams > 1:
            return _beam_search(context, prompts, decoding, stops)
        return _sample(context, prompts, decoding, stops, on_token)
    finally:
        model.train(was_training)


def _check(model, prompts: list[list[int]], decoding: Decoding, sources) -> None:
    if is_encoder_decoder(model):
        if sources is None or len(sources) != len(prompts):
            raise ConfigError(f"an encoder-decoder generates from a source text: give one source per prompt "
                              f"({len(prompts)} prompts, {0 if sources is None else len(sources)} sources)")
        if any(not source for source in sources):
            raise ConfigError("a source is empty: the encoder needs at least one token per source")
    elif not is_decoder(model):
        raise ConfigError(f"the model ({type(model).__name__}) is an encoder (model.causal: false): text generation "
                          "continues a text left to right and needs a decoder or an encoder-decoder")
    elif sources is not None:
        raise ConfigError("sources are the encoder inputs of an encoder-decoder; this model is a decoder: put the "
                          "text to continue in the prompts")
    if any(not prompt for prompt in prompts):
        raise ConfigError("a prompt is empty: give at least one token to continue (e.g. the tokenizer's bos or eos)")


class _Stops:
    """Where a continuation ends: at a stop id (eos unless ``stop_at_eos`` is off, ``stop_token_ids``) or where its
    text first contains a stop string."""

    def __init__(self, tokenizer, decoding: Decoding):
        self.tokenizer = tokenizer
        self.ids = set(decoding.stop_token_ids) | ({tokenizer.special.eos} if decoding.stop_at_eos else set())
        for text in decoding.stop_strings:
            if not tokenizer.encode(text):
                raise ConfigError(f"the stop string {text!r} encodes to no token, so no continuation can contain it: "
                                  "remove it or give a string with visible text")
        self.strings = decoding.stop_strings

    def cut(self, generated: list[int]) -> int | None:
        """None while ``generated`` goes on; when its last token ends it, how many of its tokens to keep."""
        if generated[-1] in self.ids:
            return len(generated) - 1
        if not self.strings:
            return None
        text = self.tokenizer.decode(generated)
        starts = [at for at in (text.find(s) for s in self.strings) if at >= 0]
        if not starts:
            return None
        # Keep the longest run of tokens whose text ends before the stop string (a token that reaches into it goes).
        before = text[:min(starts)]
        return next(n for n in range(len(generated) - 1, -1, -1)
                    if before.startswith(self.tokenizer.decode(generated[:n])))


class _Context:
    """The rows being decoded: their left-padded ids and attention mask, and (``use_cache``) the model's KV cache,
    or for an encoder-decoder the encoded sources. ``select`` keeps and reorders rows (beams, finished rows)."""

    def __init__(self, model, prompts, sources, use_cache: bool, device: str):
        self.model = model
        self.ids, self.mask = _pad(prompts, device, left=True)
        self.limit = getattr(model, "max_seq_len", None) or sys.maxsize
        self.memory = self.source_mask = None
        if sources is not None:
            source_ids, self.source_mask = _pad(sources, device, left=False)
            self.memory = model.encode(source_ids, self.source_mask)
        self.cache = _new_cache(model) if use_cache else None

    def logits(self) -> torch.Tensor:
        """(rows, vocab) float32 logits of each row's next token."""
        if self.cache is not None and self.ids.shape[1] > self.limit:
            self.cache = None  # the context window slides now: positions change, the cached keys no longer fit
        if self.cache is None:
            ids, mask, cache = self.ids[:, -self.limit:], self.mask[:, -self.limit:], None
        else:
            ids, mask, cache = self.ids[:, self.cache.length:], self.mask, self.cache
        if self.memory is None:
            out = self.model(ids, mask) if cache is None else self.model(ids, mask, cache=cache)
        else:
            out = self.model(None, self.source_mask, decoder_input_ids=ids, decoder_attention_mask=mask,
                             encoder_hidden=self.memory, cache=cache)
        return out[:, -1].float()

    def append(self, tokens: torch.Tensor) -> None:
        self.ids = torch.cat([self.ids, tokens[:, None]], dim=1)
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(tokens), 1)], dim=1)

    def select(self, index: torch.Tensor) -> None:
        self.ids, self.mask = self.ids[index], self.mask[index]
        if self.memory is not None:
            self.memory, self.source_mask = self.memory[index], self.source_mask[index]
        if self.cache is not None:
            self.cache.reorder(index)


def _new_cache(model):
    """The model's KV cache; None (recompute) for a model part that offers none."""
    return model.new_cache() if hasattr(model, "new_cache") else None


def _pad(rows: list[list[int]], device: str, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of rows padded to one length: prompts on the left, so that every row's next token is the last
    column; sources on the right, so that an encoder numbers their positions from 0. Padding holds id 0, masked (any
    id in the model's range would do)."""
    width = max(len(row) for row in rows)
    ids = [[0] * (width - len(row)) + row if left else row + [0] * (width - len(row)) for row in rows]
    mask = [[False] * (width - len(row)) + [True] * len(row) if left else [True] * len(row) + [False] * (width - len(row))
            for row in rows]
    return torch.tensor(ids, dtype=torch.long, device=device), torch.tensor(mask, device=device)


class _Seen:
    """Which ids each row's prompt and output hold, for the repetition penalty."""

    def __init__(self, ids: torch.Tensor, mask: torch.Tensor, vocab: int, penalty: float):
        self.penalty = penalty
        counts = torch.zeros(len(ids), vocab, device=ids.device).scatter_add_(1, ids, mask.float())
        self.seen = counts > 0

    def penalize(self, logits: torch.Tensor) -> torch.Tensor:
        if self.penalty == 1.0:
            return logits
        penalized = torch.where(logits > 0, logits / self.penalty, logits * self.penalty)
        return torch.where(self.seen, penalized, logits)

    def add(self, tokens: torch.Tensor) -> None:
        self.seen[torch.arange(len(tokens), device=tokens.device), tokens] = True

    def select(self, index: torch.Tensor) -> None:
        self.seen = self.seen[index]


def _warp(logits: torch.Tensor, decoding: Decoding) -> torch.Tensor:
    """Temperature, then top-k, then top-p: the logits of the tokens sampling may draw, -inf elsewhere."""
    logits = logits / decoding.temperature
    if decoding.top_k is not None and decoding.top_k < logits.shape[-1]:
        kth = torch.topk(logits, decoding.top_k).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if decoding.top_p is not None and decoding.top_p < 1.0:
        ordered, order = torch.sort(logits, dim=-1, descending=True, stable=True)
        probs = ordered.softmax(dim=-1)
        # A token stays while the more likely ones before it hold less than top_p: the smallest set with mass >= p.
        drop = (probs.cumsum(dim=-1) - probs) >= decoding.top_p
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return logits


def _sample(context: _Context, prompts, decoding: Decoding, stops: _Stops, on_token) -> list[list[int]]:
    device = context.ids.device
    generators = [torch.Generator(device=device).manual_seed(random.Random(f"{decoding.seed}:{row}").getrandbits(63))
                  for row in range(len(prompts))]
    rows = list(range(len(prompts)))  # the prompt each live row of the context decodes
    generated: list[list[int]] = [[] for _ in prompts]
    results: list[list[int] | None] = [None] * len(prompts)
    seen = None
    for _ in range(decoding.max_new_tokens):
        logits = context.logits()
        if seen is None:
            seen = _Seen(context.ids, context.mask, logits.shape[-1], decoding.repetition_penalty)
        logits = seen.penalize(logits)
        if decoding.greedy:
            tokens = logits.argmax(dim=-1)
        else:
            probs = _warp(logits, decoding).softmax(dim=-1)
            tokens = torch.cat([torch.multinomial(probs[i], 1, generator=generators[row])
                                for i, row in enumerate(rows)])
        keep = []
        for i, (row, token) in enumerate(zip(rows, tokens.tolist())):
            generated[row].append(token)
            cut = stops.cut(generated[row])
            if cut is None:
                keep.append(i)
                if on_token is not None:
                    on_token(row, token)
            else:
                results[row] = generated[row][:cut]
        if not keep:
            break
        if len(keep) < len(rows):  # finished rows leave the batch
            index = torch.tensor(keep, device=device)
            context.select(index)
            seen.select(index)
            tokens, rows = tokens[index], [rows[i] for i in keep]
        seen.add(tokens)
        context.append(tokens)
    return [generated[row] if result is None else result for row, result in enumerate(results)]


class _Beams:
    """One prompt's beam search, as transformers does it: ``num_beams`` running beams and the best ``num_beams``
    finished hypotheses, each scored summed log-probability / generated length ** length_penalty."""

    def __init__(self, num_beams: int):
        self.running: list[list[int]] = [[] for _ in range(num_beams)]
        self.scores = [0.0] + [IMPOSSIBLE] * (num_beams - 1)  # the first step expands one beam
        self.finished: list[tuple[float, list[int]]] = []
        self.done = False


def _beam_search(context: _Context, prompts, decoding: Decoding, stops: _Stops) -> list[list[int]]:
    n, device = decoding.num_beams, context.ids.device
    context.select(torch.arange(len(prompts), device=device).repeat_interleave(n))
    searches = [_Beams(n) for _ in prompts]
    live = list(range(len(prompts)))  # the prompts still searched, n rows each in the context
    seen = None
    for step in range(1, decoding.max_new_tokens + 1):
        logits = context.logits()
        vocab = logits.shape[-1]
        if n > vocab:
            raise ConfigError(f"num_beams ({n}) is larger than the vocabulary ({vocab} tokens): each beam must end "
                              "in a different token; use at most the vocabulary size")
        if seen is None:
            seen = _Seen(context.ids, context.mask, vocab, decoding.repetition_penalty)
        log_probs = seen.penalize(logits).log_softmax(dim=-1).view(len(live), n, vocab)
        scores = torch.tensor([searches[p].scores for p in live], device=device)
        totals = (log_probs + scores[:, :, None]).view(len(live), n * vocab)
        # 2n candidates leave n running beams even when n of them end; a stable sort orders ties by beam, then id.
        best, flat = torch.sort(totals, dim=-1, descending=True, stable=True)
        best, flat = best[:, :2 * n].tolist(), flat[:, :2 * n].tolist()
        index, tokens, still = [], [], []
        for j, p in enumerate(live):
            beams, chosen, ended = searches[p], [], []
            for rank, (score, f) in enumerate(zip(best[j], flat[j])):
                beam, token = divmod(f, vocab)
                sequence = beams.running[beam] + [token]
                cut = stops.cut(sequence)
                if cut is None and step < decoding.max_new_tokens:
                    chosen.append((score, beam, sequence))
                else:
                    ended.append((score + IMPOSSIBLE, beam, sequence))
                    if rank < n:  # only the top n candidates may finish, the others keep the search going
                        kept = sequence if cut is None else sequence[:cut]
                        beams.finished.append((score / step ** decoding.length_penalty, kept))
            beams.finished = sorted(beams.finished, key=lambda hyp: -hyp[0])[:n]  # stable: earlier first on ties
            chosen = (chosen + ended)[:n] if len(chosen) < n else chosen[:n]
            beams.scores = [score for score, _, _ in chosen]
            beams.running = [sequence for _, _, sequence in chosen]
            beams.done = not any(score > IMPOSSIBLE / 2 for score in beams.scores) or (
                len(beams.finished) == n and beams.scores[0] / step ** decoding.length_penalty
                <= beams.finished[-1][0])
            if not beams.done:
                still.append(p)
                index += [j * n + beam for _, beam, _ in chosen]
                tokens += [sequence[-1] for _, _, sequence in chosen]
        if not still:
            break
        index = torch.tensor(index, device=device)
        context.select(index)
        seen.select(index)
        tokens = torch.tensor(tokens, device=device)
        seen.add(tokens)
        context.append(tokens)
        live = still
    return [searches[p].finished[0][1] for p in range(len(prompts))]


def load_trained(run_dir: Path, config, device: str = "cpu", checkpoint: str | None = None):
    """(tokenizer, model) of a run's latest checkpoint (or the one ``checkpoint`` names: see checkpoint.find), rebuilt
    from its config without reading the training data. Generation needs the backbone and its language-model head
    only: task heads a fine-tuned run saved (``heads.*``) are not loaded, and an encoder is refused."""
    from hookformer.core import checkpoint as checkpoints
    from hookformer.core.assemble import Assembly

    path = checkpoints.find(run_dir, checkpoint)
    checkpoints.verify(path)  # before its manifest decides the model's shapes
    assembly = Assembly(config, run_dir, device=device, checkpoint=path)
    tokenizer, model = assembly.tokenizer(), assembly.model()
    if not is_decoder(model) and not is_encoder_decoder(model):
        raise ConfigError(f"{run_dir} holds an encoder (its model part {config.parts['model'].name} is not causal; "
                          f"objective {config.parts['objective'].name}): text generation continues a text left to "
                          "right and needs a decoder or an encoder-decoder. Score the run with `hookformer evaluate` "
                          "instead.")
    checkpoints.load_pretrained(path, model)
    return tokenizer, model.eval()
