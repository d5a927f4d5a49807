"""What a masked-LM objective corrupts: word boundaries, word and span selection, similar-word replacement.

Masking runs in the objective's ``transform`` on the id tensors of a batch, so everything here is a function of the
ids, the tokenizer and (for similar words) the current model: nothing is stored with the data, a cached data table
serves every masking strategy, and a resumed run masks exactly as the uninterrupted one (the draws come from the
run's seeded RNG, or a fixed seed in evaluation).

**Word boundaries** (``word_boundaries`` option): a source says, for a (B, T) batch of ids, where each word begins
(:class:`WordBoundaries`). Built in:

- ``pieces``: from the tokenizer's own pieces, for space-delimited text. A token begins a word when its text begins
  with whitespace after another token (SentencePiece's ``▁``, byte-level BPE's leading space), when the token before
  it ends with whitespace (byte and character tokenizers), or when it or the token before it is punctuation only
  (``word.`` is two words). A token of whitespace only ends the word before it. WordPiece continuations
  (``##ing``) join the word before them. Read once per vocabulary id from ``tokenizer.decode``, so any tokenizer
  serves.
- ``jieba``: from the Chinese word segmenter ``jieba`` (imported only when this source is built), for Chinese text.
  Each run of regular tokens is decoded to text, segmented, and mapped back onto its tokens through the tokenizer's
  ``encode_with_offsets`` (see the Tokenizer protocol): a token begins a word when its first character begins a
  segmented word. A tokenizer without offsets is refused. A token that spans two segmented words (a BPE piece
  ``中国人`` over ``中国`` + ``人``) joins them into one masking unit. Where re-encoding the decoded run gives other
  ids than the run (only at its cut edges: a block that starts inside a word or a character), the tokens outside
  the common prefix and suffix join the word before them.
- ``MODULE:ATTRIBUTE``: a third party's source, ``factory(tokenizer) -> WordBoundaries``, imported by reference as
  part factories are.

**Selection** (``masking``): ``token`` selects each regular token with probability ``mask_prob`` (BERT);
``whole_word`` selects whole words until ``mask_prob`` of the sequence's regular tokens are selected (BERT-wwm);
``span`` selects runs of 1 to ``max_span_words`` whole words, their length drawn from MacBERT's n-gram distribution
(40/30/20/10% for 1-4 words) or SpanBERT's (geometric, p = 0.2, clipped at ``max_span_words``), until the same
budget is reached (Google's BERT procedure: words in random order, skipping one that would overshoot the budget; a
span that would overshoot is shortened). A span never crosses a special token or padding.

**Replacement**: a selected word is replaced as a whole: by the mask token (``replace_with_mask``), by similar
tokens (``replace_with_similar``, MLM as correction, MacBERT), by random regular tokens (``replace_with_random``),
or left as it is (the rest); the choice is drawn once per word. Similar tokens come from a :class:`SimilarWords`
source (``similar_words``): ``embeddings``, the default, needs no download: each token of the word is replaced by
one of its ``similar_top_k`` nearest neighbours (cosine similarity) among the regular tokens in the current model's
input embeddings, drawn uniformly. Early in pretraining those embeddings are close to random, so the neighbours are
too; MacBERT used word2vec synonyms, which a ``MODULE:ATTRIBUTE`` source (``factory(tokenizer, model) ->
SimilarWords``) can provide.
"""

from __future__ import annotations

import unicodedata
from typing import Callable, Literal, Protocol

import torch
from pydantic import Field, field_validator, model_validator

from hookformer.core.errors import ConfigError
from hookformer.core.parts import PartOptions, resolve


class WordBoundaries(Protocol):
    """A source of word boundaries for masking whole words."""

    def word_starts(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) bool, True where a token begins a word. Special tokens (and padding) are words of their own."""
        ...


class SimilarWords(Protocol):
    """A source of replacements for MLM as correction."""

    def similar(self, ids: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """For a 1-D tensor of regular token ids, a regular token id similar to each (never the id itself, where
        the vocabulary allows), drawn with ``generator`` (None: the global RNG)."""
        ...


#: Span lengths in words: probabilities of 1, 2, ... words (MacBERT) or a function of the longest span (SpanBERT).
SPAN_LENGTHS: dict[str, Callable[[int], list[float]]] = {
    "macbert": lambda longest: [0.4, 0.3, 0.2, 0.1][:longest],
    "spanbert": lambda longest: [0.2 * 0.8 ** (n - 1) for n in range(1, longest + 1)],
}


class MaskingOptions(PartOptions):
    """The masking options every masked-LM objective shares (mlm, electra)."""

    mask_prob: float = Field(0.15, gt=0.0, lt=1.0, description="share of regular tokens selected for prediction")
    masking: Literal["token", "whole_word", "span"] = Field(
        "token", description="token: each token on its own (BERT); whole_word: all pieces of a word together "
        "(BERT-wwm); span: runs of 1 to max_span_words whole words (MacBERT n-grams, SpanBERT spans)")
    word_boundaries: str = Field(
        "pieces", min_length=1, description="where words begin, for whole_word and span: pieces (the tokenizer's "
        "pieces, space-delimited text), jieba (the Chinese segmenter; needs a tokenizer with encode_with_offsets) "
        "or MODULE:ATTRIBUTE, a factory(tokenizer) returning a WordBoundaries source")
    span_lengths: Literal["macbert", "spanbert"] = Field(
        "macbert", description="span: the distribution of span lengths in words: macbert 40/30/20/10% for 1-4 "
        "words; spanbert geometric with p=0.2")
    max_span_words: int = Field(4, ge=1, le=16, description="span: the longest span, in words")
    replace_with_mask: float = Field(0.8, ge=0.0, le=1.0, description="share of selected words set to the mask "
                                     "token")
    replace_with_similar: float = Field(0.0, ge=0.0, le=1.0, description="share replaced by similar tokens (MLM as "
                                        "correction, MacBERT: 0.8 with replace_with_mask 0)")
    replace_with_random: float = Field(0.1, ge=0.0, le=1.0, description="share set to random regular tokens")
    similar_words: str = Field(
        "embeddings", min_length=1, description="the source of similar tokens: embeddings (nearest neighbours in "
        "the model's input embeddings) or MODULE:ATTRIBUTE, a factory(tokenizer, model) returning a SimilarWords "
        "source")
    similar_top_k: int = Field(8, ge=1, le=1000, description="embeddings: draw among this many nearest neighbours")
    eval_seed: int = Field(0, description="seed of the masks used in evaluation")

    @field_validator("word_boundaries")
    @classmethod
    def _known_boundaries(cls, value: str) -> str:
        if value not in BOUNDARIES and ":" not in value:
            raise ValueError(f"{value!r} is not a word-boundary source: use {', '.join(BOUNDARIES)} or "
                             "MODULE:ATTRIBUTE")
        return value

    @field_validator("similar_words")
    @classmethod
    def _known_similar(cls, value: str) -> str:
        if value != "embeddings" and ":" not in value:
            raise ValueError(f"{value!r} is not a similar-word source: use embeddings or MODULE:ATTRIBUTE")
        return value

    @model_validator(mode="after")
    def _shares_fit(self):
        shares = self.replace_with_mask + self.replace_with_similar + self.replace_with_random
        if shares > 1.0 + 1e-9:
            raise ValueError(f"replace_with_mask + replace_with_similar + replace_with_random is {shares:g}; it must "
                             "be at most 1 (the rest stays unchanged)")
        return self


def span_probabilities(options: MaskingOptions) -> torch.Tensor:
    """Probabilities of spans of 1, 2, ... words: one word for ``whole_word``, ``span_lengths`` for ``span``."""
    if options.masking != "span":
        return torch.ones(1)
    weights = torch.tensor(SPAN_LENGTHS[options.span_lengths](options.max_span_words), dtype=torch.float64)
    return weights / weights.sum()


# -- word boundaries ------------------------------------------------------------------------------------------------

class PieceBoundaries:
    """``word_boundaries: pieces`` (see the module docstring): a per-id table read from the tokenizer's decoding."""

    def __init__(self, tokenizer):
        special = tokenizer.special.ids()
        anchor = tokenizer.encode("a")
        anchor_text = tokenizer.decode(anchor)
        size = tokenizer.vocab_size
        leads, trails, puncts, spaces = (torch.zeros(size, dtype=torch.bool) for _ in range(4))
        for i in range(size):
            if i in special:
                continue
            alone = tokenizer.decode([i])
            glued = tokenizer.decode([*anchor, i])[len(anchor_text):]
            leads[i] = glued[:1].isspace()
            trails[i] = alone[-1:].isspace()
            spaces[i] = alone.isspace()  # whitespace alone ends the word before it
            stripped = alone.strip()
            puncts[i] = bool(stripped) and all(unicodedata.category(c)[0] in "PS" for c in stripped)
        leads[sorted(special)] = puncts[sorted(special)] = True  # a special token is a word of its own
        self.leads, self.trails, self.puncts, self.spaces = leads, trails, puncts, spaces

    def word_starts(self, input_ids: torch.Tensor) -> torch.Tensor:
        ids = input_ids.cpu()
        starts = self.leads[ids] | self.puncts[ids]
        before = self.trails[ids[:, :-1]] | self.puncts[ids[:, :-1]]
        starts[:, 1:] |= before
        starts &= ~self.spaces[ids]
        starts[:, 0] = True
        return starts.to(input_ids.device)


class JiebaBoundaries:
    """``word_boundaries: jieba`` (see the module docstring)."""

    def __init__(self, tokenizer):
        encode_with_offsets = getattr(tokenizer, "encode_with_offsets", None)
        if encode_with_offsets is None:
            raise ConfigError(
                f"objective word_boundaries: jieba maps segmented Chinese words back onto tokens through the "
                f"tokenizer's character offsets, and the tokenizer ({type(tokenizer).__name__}) has no "
                f"encode_with_offsets(text); use a tokenizer that gives offsets (sentencepiece, byte, hf_tokenizer), "
                f"or word_boundaries: pieces for space-delimited text.")
        import jieba  # a dependency of the Chinese parts only

        self._segmenter = jieba.Tokenizer()
        jieba.setLogLevel(30)  # its dictionary-loading messages are not the run's
        self._segmenter.initialize()
        self._tokenizer = tokenizer
        self._special = torch.tensor(sorted(tokenizer.special.ids()))

    def word_starts(self, input_ids: torch.Tensor) -> torch.Tensor:
        ids = input_ids.cpu()
        special = torch.isin(ids, self._special)
        starts = special.clone()
        starts[:, 0] = True
        for row, (row_ids, row_special) in enumerate(zip(ids.tolist(), special.tolist())):
            begin = 0
            for end in range(len(row_ids) + 1):
                if end == len(row_ids) or row_special[end]:
                    if end > begin:
                        for offset in self._run_starts(row_ids[begin:end]):
                            starts[row, begin + offset] = True
                    begin = end + 1
        return starts.to(input_ids.device)

    def _run_starts(self, run: list[int]) -> list[int]:
        """The indices in ``run`` (regular tokens) of the tokens that begin a segmented word."""
        text = self._tokenizer.decode(run)
        encoded, offsets = self._tokenizer.encode_with_offsets(text)
        # Align the run with its re-encoding: the common prefix and suffix (at most the whole of the shorter one).
        prefix = 0
        while prefix < min(len(run), len(encoded)) and run[prefix] == encoded[prefix]:
            prefix += 1
        suffix = 0
        while (suffix < min(len(run), len(encoded)) - prefix
               and run[len(run) - 1 - suffix] == encoded[len(encoded) - 1 - suffix]):
            suffix += 1
        first_chars = {i: offsets[i][0] for i in range(prefix)}
        first_chars.update({len(run) - 1 - j: offsets[len(encoded) - 1 - j][0] for j in range(suffix)})
        word_begins, position = set(), 0
        for word in self._segmenter.cut(text):
            if not word.isspace():  # whitespace ends the word before it, as with pieces
                word_begins.add(position)
            position += len(word)
        out, previous = [0], first_chars.get(0)
        for i in range(1, len(run)):
            char = first_chars.get(i)
            if char is not None and char != previous and char in word_begins:
                out.append(i)
            previous = char if char is not None else previous
        return out


#: The built-in word-boundary sources: factory(tokenizer) -> WordBoundaries.
BOUNDARIES: dict[str, Callable] = {"pieces": PieceBoundaries, "jieba": JiebaBoundaries}


def word_boundaries(name: str, tokenizer, field: str = "objective.word_boundaries") -> WordBoundaries:
    """The word-boundary source ``name`` (a built-in or ``MODULE:ATTRIBUTE``) for ``tokenizer``."""
    return _reference(name, BOUNDARIES, field)(tokenizer)


def _reference(name: str, builtins: dict, field: str):
    if name in builtins:
        return builtins[name]
    try:
        return resolve(name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{field}: cannot import {name!r} ({exc}); give MODULE:ATTRIBUTE of an installed module, "
                          f"or one of {', '.join(builtins)}.") from None


# -- selection ------------------------------------------------------------------------------------------------------

def word_firsts(starts: torch.Tensor) -> torch.Tensor:
    """(B, T) the position of the first token of each token's word."""
    positions = torch.arange(starts.shape[1], device=starts.device).expand_as(starts)
    return torch.cummax(torch.where(starts, positions, torch.zeros_like(positions)), dim=1).values


def select_words(starts: torch.Tensor, candidates: torch.Tensor, mask_prob: float, lengths: torch.Tensor,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, T) bool: whole words selected until ``round(mask_prob * regular tokens)`` tokens of each row are (see the
    module docstring). ``starts``: where words begin; ``candidates``: the tokens that may be selected (a word is a
    candidate when its first token is); ``lengths``: probabilities of spans of 1, 2, ... words."""
    selected = torch.zeros_like(candidates, dtype=torch.bool, device="cpu")
    starts, candidates = starts.cpu(), candidates.cpu()
    for row in range(starts.shape[0]):
        begins = torch.nonzero(starts[row]).flatten().tolist()
        ends = begins[1:] + [starts.shape[1]]
        words = [(b, e) for b, e in zip(begins, ends) if candidates[row, b]]
        budget = round(mask_prob * int(candidates[row].sum()))
        if not words or budget == 0:
            continue
        order = torch.randperm(len(words), generator=generator).tolist()
        spans = (torch.multinomial(lengths, len(words), replacement=True, generator=generator) + 1).tolist()
        taken, covered = [False] * len(words), 0
        for first, span in zip(order, spans):
            # The span's words: consecutive ones, with no special token or padding between them.
            chosen = [first]
            while (len(chosen) < span and chosen[-1] + 1 < len(words)
                   and words[chosen[-1] + 1][0] == words[chosen[-1]][1]):
                chosen.append(chosen[-1] + 1)
            while chosen and covered + words[chosen[-1]][1] - words[first][0] > budget:
                chosen.pop()  # shorten a span that would overshoot the budget
            if not chosen or any(taken[w] for w in chosen):
                continue
            for w in chosen:
                taken[w] = True
                selected[row, words[w][0]:words[w][1]] = True
            covered += words[chosen[-1]][1] - words[first][0]
            if covered >= budget:
                break
    return selected


# -- similar words --------------------------------------------------------------------------------------------------

def input_embedding(model):
    """The model's token embedding module: ``get_input_embeddings()`` (the Hugging Face convention) or ``tok_emb``
    (hookformer's transformer); a ConfigError when it has neither."""
    if hasattr(model, "get_input_embeddings"):
        return model.get_input_embeddings()
    if isinstance(getattr(model, "tok_emb", None), torch.nn.Embedding):
        return model.tok_emb
    raise ConfigError(f"the model ({type(model).__name__}) exposes no token embedding (get_input_embeddings() or "
                      f"tok_emb), which this objective reads; use model.name: transformer.")


class EmbeddingNeighbours:
    """``similar_words: embeddings``: nearest neighbours by cosine similarity in the model's current input
    embeddings, among the regular tokens, drawn uniformly from the ``top_k`` closest."""

    def __init__(self, embedding, regular: torch.Tensor, top_k: int):
        self._embedding = (embedding,)  # read, not owned: not registered anywhere again
        self.regular = regular
        self.top_k = min(top_k, len(regular) - 1)

    @torch.no_grad()
    def similar(self, ids: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if len(ids) == 0 or self.top_k < 1:
            return ids
        weight = self._embedding[0].weight.detach().float()
        regular = self.regular.to(weight.device)
        table = torch.nn.functional.normalize(weight[regular], dim=-1)
        queries = torch.nn.functional.normalize(weight[ids], dim=-1)
        scores = queries @ table.T
        scores[regular.unsqueeze(0) == ids.unsqueeze(1)] = -float("inf")  # never the token itself
        nearest = scores.topk(self.top_k, dim=-1).indices
        pick = torch.randint(self.top_k, (len(ids), 1), generator=generator).to(nearest.device)
        return regular[nearest.gather(1, pick).squeeze(1)]


def similar_words(options: MaskingOptions, tokenizer, model, regular: torch.Tensor,
                  field: str = "objective.similar_words") -> SimilarWords | None:
    """The similar-word source of ``options`` (None when no word is replaced by similar ones)."""
    if options.replace_with_similar == 0:
        return None
    if options.similar_words == "embeddings":
        if model is None:
            raise ConfigError(f"{field}: embeddings reads the model's input embeddings, and this objective was "
                              f"built without a model.")
        return EmbeddingNeighbours(input_embedding(model), regular, options.similar_top_k)
    return _reference(options.similar_words, {}, field)(tokenizer, model)
