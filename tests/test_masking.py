"""Masking strategies of the masked-LM objectives (plugins/objectives/masking.py): word boundaries from the
tokenizer's pieces and from jieba, whole-word and span selection, MLM as correction, on handmade English and
Chinese text."""

from pathlib import Path

import jieba
import pytest
import torch

from hookformer.core.errors import ConfigError
from hookformer.core.parts import BuildContext
from hookformer.plugins.objectives.masking import (SPAN_LENGTHS, EmbeddingNeighbours, JiebaBoundaries,
                                                   PieceBoundaries, span_probabilities, word_boundaries)
from hookformer.plugins.objectives.mlm import IGNORE, MaskedLM, MLMOptions
from hookformer.plugins.tokenizers.byte import ByteTokenizer
from hookformer.plugins.tokenizers.sentencepiece import SentencePieceOptions
from hookformer.plugins.tokenizers.sentencepiece import build as build_sentencepiece

BYTE = ByteTokenizer()
SPECIAL = BYTE.special
ENGLISH = ("The quick brown fox jumps over the lazy dog. A wizard's job is to vex chumps quickly in fog. "
           "Pack my box with five dozen liquor jugs, then sphinx of black quartz judge my vow.")
CHINESE = "我们在北京大学学习自然语言处理。今天天气很好，我们一起去公园散步吧。中国人民喜欢喝茶和吃饺子。"


class Texts:
    """The ``data`` a tokenizer trains on: ``texts()``."""

    def __init__(self, texts):
        self._texts = texts

    def texts(self):
        return iter(self._texts)


@pytest.fixture(scope="module")
def sentencepiece(tmp_path_factory):
    """A BPE SentencePiece tokenizer trained on the handmade English and Chinese texts."""
    run_dir = tmp_path_factory.mktemp("spm")
    texts = [ENGLISH, CHINESE] * 20
    return build_sentencepiece(SentencePieceOptions(vocab_size=340), BuildContext(run_dir=run_dir, data=Texts(texts)))


def row(tokenizer, text: str) -> torch.Tensor:
    """``[cls] text [sep]`` as a (1, T) batch."""
    return torch.tensor([[tokenizer.special.cls, *tokenizer.encode(text), tokenizer.special.sep]])


def words_of(tokenizer, boundaries, ids: torch.Tensor) -> list[str]:
    """The decoded words that ``boundaries`` finds in the regular tokens of the one row of ``ids``."""
    starts = boundaries.word_starts(ids)[0].tolist()
    groups: list[list[int]] = []
    for token, start in zip(ids[0].tolist(), starts):
        if start:
            groups.append([])
        groups[-1].append(token)
    special = tokenizer.special.ids()
    return [tokenizer.decode(group) for group in groups if group[0] not in special]


def objective(tokenizer=BYTE, boundaries=None, similar=None, **options) -> MaskedLM:
    options = MLMOptions(**options)
    if boundaries is None and options.masking != "token":
        boundaries = PieceBoundaries(tokenizer)
    return MaskedLM(options, tokenizer.vocab_size, tokenizer.special.ids(), tokenizer.special.mask, boundaries,
                    similar)


def english_batch(rows: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of English text of different lengths, padded."""
    texts = [ENGLISH[: 60 + 3 * i] for i in range(rows)]
    encoded = [[SPECIAL.cls, *BYTE.encode(text), SPECIAL.sep] for text in texts]
    width = max(map(len, encoded))
    ids = torch.full((rows, width), SPECIAL.pad)
    for i, tokens in enumerate(encoded):
        ids[i, :len(tokens)] = torch.tensor(tokens)
    return ids, ids != SPECIAL.pad


def word_spans(starts: torch.Tensor) -> list[tuple[int, int]]:
    begins = torch.nonzero(starts).flatten().tolist()
    return list(zip(begins, begins[1:] + [len(starts)]))


# -- word boundaries ------------------------------------------------------------------------------------------------

def test_piece_boundaries_group_the_bytes_of_each_space_delimited_word_with_its_trailing_space():
    words = words_of(BYTE, PieceBoundaries(BYTE), row(BYTE, "The quick fox, jumped over (lazy) dogs."))
    assert words == ["The ", "quick ", "fox", ", ", "jumped ", "over ", "(", "lazy", ") ", "dogs", "."]


def test_piece_boundaries_follow_sentencepiece_pieces_so_every_english_word_is_one_unit(sentencepiece):
    words = words_of(sentencepiece, PieceBoundaries(sentencepiece), row(sentencepiece, ENGLISH))
    expected = ENGLISH.replace(".", " .").replace(",", " ,").replace("'", " ' ").split()
    assert [word.strip() for word in words] == expected
    assert any(len(sentencepiece.encode(word)) > 1 for word in expected)  # pieces really are grouped


def test_jieba_boundaries_give_jiebas_words_on_a_byte_tokenizer():
    words = words_of(BYTE, JiebaBoundaries(BYTE), row(BYTE, CHINESE))
    assert words == jieba.lcut(CHINESE)
    assert any(len(word) > 1 for word in words)  # three bytes per character, several characters per word


def test_jieba_boundaries_join_jieba_words_that_a_sentencepiece_piece_spans(sentencepiece):
    ids = row(sentencepiece, CHINESE)
    words = words_of(sentencepiece, JiebaBoundaries(sentencepiece), ids)
    assert "".join(words) == CHINESE
    segmented, cuts, position = jieba.lcut(CHINESE), set(), 0
    for word in segmented:
        cuts.add(position)
        position += len(word)
    position = 0
    for word in words:  # every unit starts at a jieba word boundary: it is one or more whole jieba words
        assert position in cuts, (word, words)
        position += len(word)
    assert len(words) <= len(segmented)


def test_jieba_boundaries_of_a_block_cut_inside_a_character_keep_the_rest_of_the_words():
    ids = row(BYTE, CHINESE)
    cut = torch.cat([ids[:, :1], ids[:, 2:]], dim=1)  # the first character loses its first byte
    words = words_of(BYTE, JiebaBoundaries(BYTE), cut)
    # The two bytes left of the first character do not re-encode as themselves: they make one unit of their own.
    assert words == ["\ufffd\ufffd", *jieba.lcut(CHINESE[1:])]


def test_chinese_whole_word_masking_refuses_a_tokenizer_without_offsets():
    class NoOffsets:
        special, vocab_size = BYTE.special, BYTE.vocab_size
        encode, decode = BYTE.encode, BYTE.decode

    with pytest.raises(ConfigError, match="jieba.*no encode_with_offsets.*word_boundaries: pieces"):
        word_boundaries("jieba", NoOffsets())


def test_a_third_party_word_boundary_source_is_named_by_module_and_attribute():
    source = word_boundaries("hookformer.plugins.objectives.masking:PieceBoundaries", BYTE)
    assert isinstance(source, PieceBoundaries)
    with pytest.raises(ConfigError, match="objective.word_boundaries: cannot import 'no_such_module:x'"):
        word_boundaries("no_such_module:x", BYTE)
    with pytest.raises(ValueError, match="not a word-boundary source"):
        MLMOptions(word_boundaries="spaces")


# -- selection ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("masking", ["whole_word", "span"])
def test_word_masking_selects_whole_words_at_the_masking_rate_and_never_special_or_padding(masking):
    ids, attention_mask = english_batch()
    mlm = objective(masking=masking)
    torch.manual_seed(0)
    _, targets = mlm.mask(ids, attention_mask)
    selected = targets != IGNORE
    regular = attention_mask & ~torch.isin(ids, mlm.special)
    assert not selected[~regular].any()
    starts = PieceBoundaries(BYTE).word_starts(ids)
    for r in range(len(ids)):
        for begin, end in word_spans(starts[r]):
            assert selected[r, begin:end].all() or not selected[r, begin:end].any()
        # Words are taken until round(15%) of the row's tokens; a word that would overshoot is skipped.
        budget = round(0.15 * int(regular[r].sum()))
        assert budget - 8 <= int(selected[r].sum()) <= budget
    assert selected.sum() / regular.sum() == pytest.approx(0.15, abs=0.02)


def test_chinese_whole_word_masking_selects_jieba_words_whole():
    ids = row(BYTE, CHINESE * 3).repeat(32, 1)
    boundaries = JiebaBoundaries(BYTE)
    mlm = objective(boundaries=boundaries, masking="whole_word")
    torch.manual_seed(0)
    _, targets = mlm.mask(ids)
    selected = targets != IGNORE
    starts = boundaries.word_starts(ids[:1])[0]
    spans = word_spans(starts)
    for r in range(len(ids)):
        for begin, end in spans:
            assert selected[r, begin:end].all() or not selected[r, begin:end].any()
    masked_words = {BYTE.decode(ids[r, b:e].tolist()) for r in range(len(ids)) for b, e in spans if selected[r, b]}
    assert masked_words <= set(jieba.lcut(CHINESE)) and len(masked_words) > 5
    assert selected.sum() / (ids.shape[1] - 2) / len(ids) == pytest.approx(0.15, abs=0.02)


def test_span_lengths_are_macberts_ngram_shares_and_spanberts_clipped_geometric():
    assert span_probabilities(MLMOptions(masking="span", span_lengths="macbert")).tolist() == pytest.approx(
        [0.4, 0.3, 0.2, 0.1])
    geometric = [0.2 * 0.8 ** k for k in range(10)]
    assert span_probabilities(MLMOptions(masking="span", span_lengths="spanbert", max_span_words=10)).tolist() == \
        pytest.approx([p / sum(geometric) for p in geometric])
    assert span_probabilities(MLMOptions(masking="whole_word")).tolist() == [1.0]
    assert SPAN_LENGTHS["macbert"](2) == [0.4, 0.3]


def test_span_masking_selects_runs_of_consecutive_words_longer_than_whole_word_masking():
    ids = row(BYTE, ENGLISH * 4).repeat(16, 1)  # long rows: a budget of ~100 tokens rarely shortens a span
    attention_mask = torch.ones_like(ids, dtype=torch.bool)
    starts = PieceBoundaries(BYTE).word_starts(ids)

    def mean_run(masking: str) -> float:
        torch.manual_seed(0)
        _, targets = objective(masking=masking).mask(ids, attention_mask)
        selected, runs = targets != IGNORE, []
        for r in range(len(ids)):
            length = 0
            for begin, _ in word_spans(starts[r]):
                if selected[r, begin]:
                    length += 1
                elif length:
                    runs.append(length)
                    length = 0
        return sum(runs) / len(runs)

    # MacBERT's n-grams average 2 words; single words only join when they happen to be neighbours.
    assert mean_run("span") > 1.5 * mean_run("whole_word")


def test_a_selected_word_is_masked_replaced_or_kept_as_a_whole_80_10_10():
    ids, attention_mask = english_batch(256)
    mlm = objective(masking="whole_word")
    torch.manual_seed(3)
    inputs, targets = mlm.mask(ids, attention_mask)
    starts = PieceBoundaries(BYTE).word_starts(ids)
    fates = {"mask": 0, "random": 0, "kept": 0}
    for r in range(len(ids)):
        for begin, end in word_spans(starts[r]):
            if targets[r, begin] == IGNORE:
                continue
            word, now = ids[r, begin:end], inputs[r, begin:end]
            if (now == SPECIAL.mask).all():
                fates["mask"] += 1
            elif torch.equal(now, word):
                fates["kept"] += 1
            else:
                assert not (now == SPECIAL.mask).any()  # never part masked, part replaced
                fates["random"] += 1
    total = sum(fates.values())
    assert fates["mask"] / total == pytest.approx(0.8, abs=0.02)
    assert fates["random"] / total == pytest.approx(0.1, abs=0.02)
    assert fates["kept"] / total == pytest.approx(0.1, abs=0.02)


@pytest.mark.parametrize("masking", ["token", "whole_word", "span"])
def test_masks_are_reproducible_under_a_seed_and_differ_across_seeds(masking):
    ids, attention_mask = english_batch()
    mlm = objective(masking=masking)

    def draw(seed):
        torch.manual_seed(seed)
        return mlm.mask(ids, attention_mask)

    first, again, other = draw(5), draw(5), draw(6)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])
    fixed = torch.Generator().manual_seed(0)
    assert torch.equal(mlm.mask(ids, attention_mask, fixed)[1],
                       mlm.mask(ids, attention_mask, torch.Generator().manual_seed(0))[1])


def test_chinese_masks_are_reproducible_under_a_seed():
    ids = row(BYTE, CHINESE * 2).repeat(8, 1)
    mlm = objective(boundaries=JiebaBoundaries(BYTE), masking="span")
    draws = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        draws.append(mlm.mask(ids)[1])
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])


def test_token_masking_keeps_berts_draws_exactly():
    """The default (masking: token) draws the same masks as before the masking options existed: one uniform per
    token to select, one to choose the replacement, one random id per token."""
    ids, attention_mask = english_batch()
    torch.manual_seed(9)
    inputs, targets = objective().mask(ids, attention_mask)
    torch.manual_seed(9)
    select, how = torch.rand(ids.shape), torch.rand(ids.shape)
    random_ids = torch.tensor(sorted(set(range(BYTE.vocab_size)) - SPECIAL.ids()))[
        torch.randint(BYTE.vocab_size - 7, ids.shape)]
    selected = (select < 0.15) & attention_mask & ~torch.isin(ids, torch.tensor(sorted(SPECIAL.ids())))
    expected = torch.where(selected & (how < 0.8), SPECIAL.mask, ids)
    expected = torch.where(selected & (how >= 0.8) & (how < 0.9), random_ids, expected)
    assert torch.equal(inputs, expected) and torch.equal(targets, ids.masked_fill(~selected, IGNORE))


# -- MLM as correction ----------------------------------------------------------------------------------------------

def twin_embedding() -> torch.nn.Embedding:
    """Byte ids 2k and 2k+1 point the same way (and far from every other pair): each is the other's nearest
    neighbour."""
    generator = torch.Generator().manual_seed(0)
    directions = torch.randn(BYTE.vocab_size // 2 + 1, 64, generator=generator)
    embedding = torch.nn.Embedding(BYTE.vocab_size, 64)
    with torch.no_grad():
        embedding.weight.copy_(directions.repeat_interleave(2, dim=0)[:BYTE.vocab_size]
                               * torch.rand(BYTE.vocab_size, 1, generator=generator).add(0.5))
    return embedding


def test_embedding_neighbours_replace_a_token_by_its_nearest_neighbour_never_itself():
    regular = torch.tensor(sorted(set(range(BYTE.vocab_size)) - SPECIAL.ids()))
    neighbours = EmbeddingNeighbours(twin_embedding(), regular, top_k=1)
    ids = torch.arange(0, 256)
    assert torch.equal(neighbours.similar(ids, None), ids ^ 1)
    # With top_k 8, the draw is among the 8 most similar by cosine (brute force here), never the token itself.
    torch.manual_seed(0)
    embedding = torch.nn.Embedding(BYTE.vocab_size, 16)
    weight = torch.nn.functional.normalize(embedding.weight[regular], dim=-1).detach()
    drawn = EmbeddingNeighbours(embedding, regular, top_k=8).similar(ids, torch.Generator().manual_seed(0))
    assert len(set(drawn.tolist())) > 100
    for token, replacement in zip(ids.tolist(), drawn.tolist()):
        scores = weight @ weight[token]
        scores[token] = -2.0
        assert replacement in regular[scores.topk(8).indices].tolist() and replacement != token


def test_mlm_as_correction_replaces_80_percent_of_words_by_similar_tokens_and_masks_none():
    ids, attention_mask = english_batch(256)
    regular = torch.tensor(sorted(set(range(BYTE.vocab_size)) - SPECIAL.ids()))
    mlm = objective(masking="whole_word", replace_with_mask=0.0, replace_with_similar=0.8, replace_with_random=0.1,
                    similar=EmbeddingNeighbours(twin_embedding(), regular, top_k=1))
    torch.manual_seed(4)
    inputs, targets = mlm.mask(ids, attention_mask)
    assert not (inputs == SPECIAL.mask).any()
    starts = PieceBoundaries(BYTE).word_starts(ids)
    fates = {"similar": 0, "other": 0}
    for r in range(len(ids)):
        for begin, end in word_spans(starts[r]):
            if targets[r, begin] != IGNORE:
                twins = torch.equal(inputs[r, begin:end], ids[r, begin:end] ^ 1)
                fates["similar" if twins else "other"] += 1
    assert fates["similar"] / sum(fates.values()) == pytest.approx(0.8, abs=0.02)


def test_mlm_builds_its_similar_words_from_the_models_input_embeddings(tmp_path):
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.tok_emb = twin_embedding()

    from hookformer.plugins.objectives.mlm import build

    ctx = BuildContext(run_dir=Path(tmp_path), tokenizer=BYTE, model=Model())
    mlm = build(MLMOptions(replace_with_mask=0.0, replace_with_similar=1.0, replace_with_random=0.0,
                           similar_top_k=1), ctx)
    ids, attention_mask = english_batch()
    inputs, targets = mlm.mask(ids, attention_mask)
    selected = targets != IGNORE
    assert torch.equal(inputs[selected], ids[selected] ^ 1)
    with pytest.raises(ConfigError, match="exposes no token embedding"):
        build(MLMOptions(replace_with_similar=0.1), BuildContext(run_dir=Path(tmp_path), tokenizer=BYTE,
                                                                model=torch.nn.Linear(2, 2)))


def test_masking_options_refuse_replacement_shares_above_one():
    with pytest.raises(ValueError, match="replace_with_mask \\+ replace_with_similar \\+ replace_with_random is 1.1"):
        MLMOptions(replace_with_mask=0.2, replace_with_similar=0.8, replace_with_random=0.1)


@pytest.mark.parametrize("options", [
    {"masking": "whole_word"},
    {"masking": "span", "span_lengths": "spanbert", "max_span_words": 6},
    {"masking": "span", "replace_with_mask": 0.0, "replace_with_similar": 0.8},
])
def test_mlm_with_word_masking_conforms(objective_conformance, options):
    objective_conformance("mlm", options, model={"name": "transformer", "n_layer": 1, "n_head": 2, "d_model": 16,
                                                 "causal": False})
