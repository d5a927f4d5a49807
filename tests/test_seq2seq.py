"""Sequence-to-sequence objectives: ``seq2seq`` (teacher-forced target cross-entropy) and the denoising objectives
``span_corruption`` (T5) and ``text_infilling`` (BART), whose corruption functions are pure and tested on their own."""

from collections import Counter

import numpy as np
import pytest
import torch
import transformers

from hookformer.core.errors import ConfigError
from hookformer.core.parts import BuildContext
from hookformer.plugins.attention.sdpa import sdpa_attention
from hookformer.plugins.data.pairs import seq2seq_table
from hookformer.plugins.models.transformer import Transformer, TransformerOptions
from hookformer.plugins.objectives import seq2seq, span_corruption, text_infilling
from hookformer.plugins.objectives.span_corruption import SpanCorruptionOptions, noise_mask, sentinel_ids, span_counts
from hookformer.plugins.objectives.text_infilling import (TextInfillingOptions, sentence_permutation, span_lengths,
                                                          text_infilling as infill)
from hookformer.plugins.tokenizers.byte import ByteTokenizer
from hookformer.plugins.tokenizers.sentencepiece import SentencePieceOptions
from hookformer.plugins.tokenizers.sentencepiece import build as build_sentencepiece

SENTINELS = list(range(1000, 1100))
MASK = 999


def test_span_corruption_drops_round_15_percent_in_round_noise_over_3_spans_that_alternate_with_kept_tokens():
    rng = np.random.default_rng(0)
    for length in (2, 3, 10, 57, 128, 511):
        mask = noise_mask(length, 0.15, 3.0, rng)
        noise, spans = span_counts(length, 0.15, 3.0)
        assert len(mask) == length and mask.sum() == noise == min(max(round(length * 0.15), 1), length - 1)
        starts = int((mask[1:] & ~mask[:-1]).sum())
        assert starts == spans and not mask[0] and mask[-1]  # kept first, noise last: T5's layout


def test_span_corruption_mean_span_length_is_3_over_many_draws():
    rng = np.random.default_rng(1)
    lengths = []
    for _ in range(300):
        mask = noise_mask(200, 0.15, 3.0, rng)
        runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]]))))[::2]
        lengths += runs.tolist()
    assert np.mean(lengths) == pytest.approx(30 / 10, abs=1e-9)  # 30 noise tokens in round(30 / 3) = 10 spans
    assert len(set(lengths)) > 3  # and the spans really vary in length


def test_span_corruption_marks_each_span_with_the_next_sentinel_and_the_target_restores_the_text():
    tokens = list(range(100))
    source, target = span_corruption.span_corruption(tokens, SENTINELS, 0.15, 3.0, np.random.default_rng(2))
    used = [t for t in source if t in SENTINELS]
    assert used == SENTINELS[:len(used)] and [t for t in target if t in SENTINELS] == used
    assert len(target) - len(used) == 15 and len(source) - len(used) == 85
    spans = {}
    for token in target:
        if token in SENTINELS:
            current = spans.setdefault(token, [])
        else:
            current.append(token)
    restored = [t for s in source for t in (spans[s] if s in SENTINELS else [s])]
    assert restored == tokens


def test_corruptions_are_reproducible_from_their_seed():
    tokens = list(range(300))
    for corrupt in (lambda rng: span_corruption.span_corruption(tokens, SENTINELS, 0.15, 3.0, rng),
                    lambda rng: infill(tokens, MASK, 0.3, 3.0, rng),
                    lambda rng: sentence_permutation(tokens, frozenset(range(0, 300, 7)), rng)):
        assert corrupt(np.random.default_rng(5)) == corrupt(np.random.default_rng(5))
        assert corrupt(np.random.default_rng(5)) != corrupt(np.random.default_rng(6))


def test_text_infilling_masks_round_30_percent_each_span_one_mask_token_and_keeps_the_rest_in_order():
    tokens = list(range(1, 201))
    for seed in range(20):
        source = infill(tokens, MASK, 0.3, 3.0, np.random.default_rng(seed))
        kept = [t for t in source if t != MASK]
        assert len(kept) == 140 and kept == sorted(kept)  # a subsequence of the original
        assert all(not (a == b == MASK) for a, b in zip(source, source[1:]))  # spans never adjacent


def test_text_infilling_span_lengths_are_poisson_3_cut_to_the_masked_count():
    rng = np.random.default_rng(3)
    draws = [length for _ in range(400) for length in span_lengths(60, 3.0, rng)[:-1]]  # the last one is cut
    assert np.mean(draws) == pytest.approx(3.0, abs=0.15)
    assert Counter(draws)[0] > 0  # zero-length spans exist: they insert a mask token
    assert all(sum(span_lengths(n, 3.0, rng)) == n for n in range(1, 50))


def sentences(tokens: list[int], end: int) -> list[tuple[int, ...]]:
    runs, current = [], []
    for token in tokens:
        current.append(token)
        if token == end:
            runs.append(tuple(current))
            current = []
    return runs + [tuple(current)] * bool(current)


def test_sentence_permutation_shuffles_whole_sentences():
    tokens = [1, 2, 0, 3, 0, 4, 5, 6, 0, 7]
    shuffled = sentence_permutation(tokens, frozenset({0}), np.random.default_rng(0))
    assert shuffled != tokens
    # The pieces of the result, cut where the original's sentences end, are the original's sentences.
    pieces, start = [], 0
    for index in np.argsort([shuffled.index(s[0]) for s in sentences(tokens, 0)]):
        length = len(sentences(tokens, 0)[index])
        pieces.append(tuple(shuffled[start:start + length]))
        start += length
    assert sorted(pieces) == sorted(sentences(tokens, 0))


def tiny_t5(vocab_size: int) -> transformers.T5ForConditionalGeneration:
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=vocab_size, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                                   decoder_start_token_id=ByteTokenizer.special.bos, pad_token_id=0)
    return transformers.T5ForConditionalGeneration(config).eval()


def pairs_batch():
    tokenizer = ByteTokenizer()
    sources = [list(b"guten Morgen"), list(b"danke"), list(b"ja")]
    targets = [list(b"good morning"), list(b"thanks"), list(b"yes")]
    return seq2seq_table(sources, targets, tokenizer.special, 32, 32)


def test_seq2seq_loss_is_the_summed_cross_entropy_of_the_labels_that_transformers_t5_computes():
    batch = pairs_batch()
    model = tiny_t5(ByteTokenizer.vocab_size)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                decoder_input_ids=batch["decoder_input_ids"], decoder_attention_mask=batch["decoder_attention_mask"],
                labels=batch["labels"])
    result = seq2seq.Seq2Seq(seq2seq.Seq2SeqOptions()).score({"lm": out.logits}, batch)
    labeled = int((batch["labels"] != -100).sum())
    assert result.num_items == labeled == len("good morning thanks yes") - 2 + 3
    torch.testing.assert_close(result.loss_sum / labeled, out.loss)  # T5 reports the mean over the same tokens


def test_label_smoothing_changes_the_training_loss_only():
    batch, model = pairs_batch(), tiny_t5(ByteTokenizer.vocab_size)
    logits = model(input_ids=batch["input_ids"], decoder_input_ids=batch["decoder_input_ids"]).logits
    smoothed = seq2seq.Seq2Seq(seq2seq.Seq2SeqOptions(label_smoothing=0.1))
    plain = seq2seq.Seq2Seq(seq2seq.Seq2SeqOptions())
    assert torch.equal(smoothed.score({"lm": logits}, batch, training=False).loss_sum,
                       plain.score({"lm": logits}, batch, training=True).loss_sum)
    assert not torch.allclose(smoothed.score({"lm": logits}, batch, training=True).loss_sum,
                              plain.score({"lm": logits}, batch, training=True).loss_sum)


@pytest.mark.parametrize("module,options", [(seq2seq, seq2seq.Seq2SeqOptions()),
                                            (span_corruption, SpanCorruptionOptions()),
                                            (text_infilling, TextInfillingOptions())])
def test_seq2seq_objectives_refuse_a_decoder_only_model_naming_the_encoder_decoder_part(module, options):
    model = Transformer(TransformerOptions(n_layer=1, n_head=2, d_model=16), vocab_size=300, max_seq_len=16,
                        attention=sdpa_attention)
    ctx = BuildContext(run_dir=".", tokenizer=ByteTokenizer(), model=model)
    with pytest.raises(ConfigError, match="model.name: encoder_decoder"):
        module.build(options, ctx)


def test_span_corruption_refuses_a_tokenizer_without_sentinels_naming_the_option():
    with pytest.raises(ConfigError, match=r"<extra_id_0>.*tokenizer.sentinel_tokens: 3"):
        sentinel_ids(ByteTokenizer(), 3)


class Corpus:
    def texts(self):
        return ["def add(a, b):\n    return a + b  # the sum of two numbers\n" * 20,
                "Return the first sentence of a docstring. " * 30]


def test_sentencepiece_sentinel_tokens_are_single_ids_that_decode_as_written(tmp_path):
    tokenizer = build_sentencepiece(SentencePieceOptions(vocab_size=400, sentinel_tokens=8),
                                    BuildContext(run_dir=tmp_path, data=Corpus()))
    ids = sentinel_ids(tokenizer, 8)
    assert len(set(ids)) == 8 and not set(ids) & tokenizer.special.ids()
    assert tokenizer.decode([ids[0], *tokenizer.encode(" add"), ids[1]]) == "<extra_id_0> add<extra_id_1>"
