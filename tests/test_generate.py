"""The generation engine (core/generate.py) and `hookformer generate`: greedy, sampling and beam search over batches
of prompts of different lengths, checked against written-out references and transformers' logits processors and
beam search."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hookformer.core.capabilities import AttentionCapabilities, CheckedKernel
from hookformer.core.cli import main
from hookformer.core.errors import ConfigError, HookformerError
from hookformer.core.generate import Decoding, _Seen, _warp, generate
from hookformer.core.loop import Run
from hookformer.plugins.attention.naive import naive_attention
from hookformer.plugins.attention.sdpa import sdpa_attention
from hookformer.plugins.models.encoder_decoder import EncoderDecoder, EncoderDecoderOptions
from hookformer.plugins.models.transformer import Transformer, TransformerOptions
from hookformer.plugins.tokenizers.byte import ByteTokenizer
from test_hooks import config_of, raw_config

transformers = pytest.importorskip("transformers")

TOKENIZER = ByteTokenizer()
PROMPTS = [list(b"def main("), list(b"x"), list(b"import os\n")]


def decoder(vocab: int = 263, positions: str = "rope", max_seq_len: int = 64, seed: int = 0,
            attention=sdpa_attention, **options):
    """A tiny decoder with large random weights: its next-token distributions are far from uniform, so rankings have
    no near-ties that rounding could flip."""
    torch.manual_seed(seed)
    model = Transformer(TransformerOptions(n_layer=2, n_head=2, d_model=16, positions=positions, **options),
                        attention, vocab_size=vocab, max_seq_len=max_seq_len)
    return large_weights(model)


def large_weights(model):
    with torch.no_grad():
        for weight in model.parameters():
            if weight.dim() > 1:
                weight.normal_(0.0, 0.5)
    return model.eval()


def reference_greedy(model, prompt: list[int], steps: int) -> list[int]:
    """Greedy decoding written out: the whole (cropped) context through the model at every step, one prompt."""
    ids = list(prompt)
    for _ in range(steps):
        with torch.no_grad():
            ids.append(int(model(torch.tensor([ids[-model.max_seq_len:]]))[0, -1].argmax()))
    return ids[len(prompt):]


def test_greedy_decoding_equals_a_written_out_argmax_loop_and_crops_the_context_to_max_seq_len():
    model = decoder(max_seq_len=12)
    greedy = Decoding(max_new_tokens=16, greedy=True, stop_at_eos=False, use_cache=False)
    assert generate(model, PROMPTS, greedy, tokenizer=TOKENIZER) == [reference_greedy(model, p, 16) for p in PROMPTS]


@pytest.mark.parametrize("positions", ["rope", "learned", "sinusoidal"])
def test_a_left_padded_batch_gives_each_prompt_the_continuation_it_gets_alone(positions):
    model = decoder(positions=positions)
    for decoding in (Decoding(max_new_tokens=10, greedy=True, use_cache=False),
                     Decoding(max_new_tokens=10, top_k=20, top_p=0.9, repetition_penalty=1.2, seed=7,
                              use_cache=False)):
        batch = generate(model, PROMPTS, decoding, tokenizer=TOKENIZER)
        assert [generate(model, PROMPTS[:i + 1], decoding, tokenizer=TOKENIZER)[i] for i in range(3)] == batch
        if decoding.greedy:  # (a sampled prompt draws from the stream of its index in the batch)
            assert [generate(model, [prompt], decoding, tokenizer=TOKENIZER)[0] for prompt in PROMPTS] == batch


def test_sampling_is_reproducible_per_seed_and_a_prompt_does_not_depend_on_the_prompts_after_it():
    model = decoder()
    sampled = Decoding(max_new_tokens=12, temperature=1.5, stop_at_eos=False, use_cache=False, seed=3)
    first = generate(model, PROMPTS, sampled, tokenizer=TOKENIZER)
    assert generate(model, PROMPTS, sampled, tokenizer=TOKENIZER) == first
    assert generate(model, PROMPTS[:1], sampled, tokenizer=TOKENIZER) == first[:1]
    assert generate(model, [PROMPTS[0]] * 2, sampled, tokenizer=TOKENIZER)[0] != \
        generate(model, [PROMPTS[0]] * 2, sampled, tokenizer=TOKENIZER)[1]  # each prompt draws from its own stream
    other = generate(model, PROMPTS, sampled.model_copy(update={"seed": 4}), tokenizer=TOKENIZER)
    assert other != first
    streamed = [[] for _ in PROMPTS]
    generate(model, PROMPTS, sampled, tokenizer=TOKENIZER, on_token=lambda row, token: streamed[row].append(token))
    assert streamed == first


def test_sampling_with_top_k_1_or_a_tiny_top_p_is_greedy():
    model = decoder()
    greedy = generate(model, PROMPTS, Decoding(max_new_tokens=8, greedy=True, use_cache=False), tokenizer=TOKENIZER)
    for narrow in ({"top_k": 1}, {"top_p": 1e-6}):
        decoding = Decoding(max_new_tokens=8, temperature=3.0, use_cache=False, **narrow)
        assert generate(model, PROMPTS, decoding, tokenizer=TOKENIZER) == greedy


def test_temperature_top_k_top_p_and_repetition_penalty_equal_transformers_logits_processors():
    from transformers.generation.logits_process import (RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                                                        TopKLogitsWarper, TopPLogitsWarper)

    torch.manual_seed(0)
    logits = torch.randn(4, 50) * 3
    seen_ids = torch.randint(0, 50, (4, 7))
    mask = torch.ones_like(seen_ids, dtype=torch.bool)
    expected = RepetitionPenaltyLogitsProcessor(1.3)(seen_ids, logits.clone())
    assert torch.equal(_Seen(seen_ids, mask, 50, 1.3).penalize(logits), expected)
    for options in ({"temperature": 0.7}, {"top_k": 5}, {"top_p": 0.6}, {"temperature": 1.4, "top_k": 9, "top_p": 0.8}):
        reference = logits.clone()
        for warper in (TemperatureLogitsWarper(options.get("temperature", 1.0)),
                       TopKLogitsWarper(options.get("top_k", 50)), TopPLogitsWarper(options.get("top_p", 1.0))):
            reference = warper(seen_ids, reference)
        ours = _warp(logits, Decoding(**options))
        assert torch.equal(ours.isinf(), reference.isinf()), options
        assert torch.allclose(ours[~ours.isinf()], reference[~reference.isinf()]), options


def test_top_p_keeps_the_smallest_set_of_tokens_whose_probability_reaches_p():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = {p: (~_warp(logits, Decoding(top_p=p)).isinf()).nonzero()[:, 1].tolist() for p in (0.4, 0.79, 0.81, 0.99)}
    assert kept == {0.4: [0], 0.79: [0, 1], 0.81: [0, 1, 2], 0.99: [0, 1, 2, 3]}


def test_the_repetition_penalty_counts_the_prompt_and_the_output_but_not_the_padding():
    seen = _Seen(torch.tensor([[0, 0, 5], [2, 3, 4]]), torch.tensor([[False, False, True], [True, True, True]]),
                 6, 2.0)
    seen.add(torch.tensor([1, 1]))
    logits = torch.tensor([[1.0, 1.0, 1.0, -1.0, 1.0, 1.0]] * 2)
    assert seen.penalize(logits).tolist() == [[1.0, 0.5, 1.0, -1.0, 1.0, 0.5], [1.0, 0.5, 0.5, -2.0, 0.5, 1.0]]


def test_stop_ids_and_stop_strings_end_a_continuation_and_are_removed_with_what_follows():
    model = decoder(vocab=128)  # ASCII only: one byte is one character
    free = generate(model, PROMPTS, Decoding(max_new_tokens=12, greedy=True), tokenizer=TOKENIZER)
    assert all(len(ids) == 12 for ids in free)
    stop_id = free[0][4]
    stopped = generate(model, PROMPTS[:1], Decoding(max_new_tokens=12, greedy=True, stop_token_ids=[stop_id]),
                       tokenizer=TOKENIZER)
    assert stopped == [free[0][:free[0].index(stop_id)]]
    text = TOKENIZER.decode(free[1])
    stop = text[5:7]
    stopped = generate(model, PROMPTS, Decoding(max_new_tokens=12, greedy=True, stop_strings=["\x00\x01", stop]),
                       tokenizer=TOKENIZER)
    assert TOKENIZER.decode(stopped[1]) == text[:text.index(stop)]
    assert [len(ids) for ids in stopped] == [
        len(ids) if stop not in TOKENIZER.decode(ids) else TOKENIZER.decode(ids).index(stop) for ids in free]


def reference_beam_search(model, prompt: list[int], num_beams: int, steps: int, length_penalty: float,
                          stop_id: int) -> list[int]:
    """transformers' beam search written out for one prompt, each candidate sequence through the model alone: every
    step ranks the 2 * num_beams best extensions of the running beams (summed log-probabilities; ties by beam, then
    id); those of them in the first num_beams that end (stop id or last step) join the finished hypotheses, scored
    sum / length ** length_penalty, the best num_beams kept; the best num_beams that go on are the next beams. The
    search ends when num_beams hypotheses are finished and the best running beam, scored at its current length,
    cannot beat the worst of them."""
    running = [(0.0, [])] + [(-1e9, [])] * (num_beams - 1)
    finished = []
    for step in range(1, steps + 1):
        candidates = []
        for beam, (score, sequence) in enumerate(running):
            with torch.no_grad():
                log_probs = model(torch.tensor([prompt + sequence]))[0, -1].float().log_softmax(-1)
            totals = (log_probs + torch.tensor(score)).tolist()
            candidates += [(total, beam, token) for token, total in enumerate(totals)]
        candidates = sorted(candidates, key=lambda c: -c[0])[:2 * num_beams]
        going = []
        for rank, (total, beam, token) in enumerate(candidates):
            sequence = running[beam][1] + [token]
            if token == stop_id or step == steps:
                if rank < num_beams:
                    finished.append((total / step ** length_penalty, sequence[:-1] if token == stop_id else sequence))
            else:
                going.append((total, sequence))
        finished = sorted(finished, key=lambda hyp: -hyp[0])[:num_beams]
        running = going[:num_beams]
        if step == steps or len(finished) == num_beams and running[0][0] / step ** length_penalty <= finished[-1][0]:
            break
    return finished[0][1]


@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 2.0, -1.0])
def test_beam_search_equals_a_written_out_reference_on_a_tiny_vocabulary(length_penalty):
    model = decoder(vocab=6, seed=1)
    prompts = [[1, 2, 3, 4], [5], [2, 2]]
    for num_beams in (2, 3, 6):
        decoding = Decoding(max_new_tokens=7, num_beams=num_beams, length_penalty=length_penalty, stop_at_eos=False,
                            stop_token_ids=[0], use_cache=False)
        expected = [reference_beam_search(model, p, num_beams, 7, length_penalty, 0) for p in prompts]
        assert generate(model, prompts, decoding, tokenizer=TOKENIZER) == expected, num_beams


class HFDecoder(torch.nn.Module):
    """A transformers causal LM behind the engine's model interface: (ids, attention_mask) -> logits."""

    causal = True

    def __init__(self, hf):
        super().__init__()
        self.hf, self.max_seq_len = hf, hf.config.n_positions

    def forward(self, ids, attention_mask):
        return self.hf(input_ids=ids, attention_mask=attention_mask.long()).logits


@pytest.mark.parametrize("length_penalty", [1.0, 0.5])
def test_beam_search_and_penalized_greedy_decoding_equal_transformers_generate(length_penalty):
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=263, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                     initializer_range=0.5, bos_token_id=257, eos_token_id=258)
    hf = transformers.GPT2LMHeadModel(config).eval()
    model = HFDecoder(hf).eval()
    for prompt in PROMPTS[:2]:
        for options in ({"num_beams": 4, "length_penalty": length_penalty}, {"repetition_penalty": 1.5}):
            with torch.no_grad():
                how = transformers.GenerationConfig(max_new_tokens=9, do_sample=False, early_stopping=False,
                                                    eos_token_id=258, pad_token_id=258, use_cache=False, **options)
                out = hf.generate(torch.tensor([prompt]), generation_config=how)[0, len(prompt):]
            expected = out.tolist()[:out.tolist().index(258)] if 258 in out.tolist() else out.tolist()
            decoding = Decoding(max_new_tokens=9, greedy=True, use_cache=False, **options)
            assert generate(model, [prompt], decoding, tokenizer=TOKENIZER) == [expected], options


KINDS = {"greedy": {"greedy": True, "repetition_penalty": 1.3},
         "sampled": {"temperature": 1.3, "top_k": 50, "top_p": 0.95, "repetition_penalty": 1.3, "seed": 11},
         "beam": {"num_beams": 3, "length_penalty": 0.7}}


@pytest.mark.parametrize("positions", ["learned", "rope"])
@pytest.mark.parametrize("kind", KINDS)
def test_cached_decoding_equals_recomputing_the_context_token_for_token(positions, kind):
    """Left-padded prompts of different lengths; the context outgrows max_seq_len (16), where the cache gives way
    to the sliding window."""
    model = decoder(positions=positions, max_seq_len=16)
    caches, new_cache = [], model.new_cache
    model.new_cache = lambda: caches.append(new_cache()) or caches[-1]
    decoding = Decoding(max_new_tokens=12, stop_at_eos=False, **KINDS[kind])
    cached = generate(model, PROMPTS, decoding, tokenizer=TOKENIZER)
    assert caches[0].length == 16  # filled up to max_seq_len, then the window slides
    assert cached == generate(model, PROMPTS, decoding.model_copy(update={"use_cache": False}), tokenizer=TOKENIZER)
    assert all(len(ids) == 12 for ids in cached) or kind == "beam"


def test_a_kernel_that_cannot_attend_over_cached_keys_is_refused_with_how_to_generate_without_the_cache():
    equal_only = CheckedKernel("equal_only", naive_attention, AttentionCapabilities(unequal_lengths=False))
    model, reference = decoder(attention=equal_only), decoder(attention=naive_attention)
    with pytest.raises(HookformerError, match="cannot attend over cached keys.*use_cache: false"):
        generate(model, PROMPTS, Decoding(max_new_tokens=3, greedy=True), tokenizer=TOKENIZER)
    uncached = Decoding(max_new_tokens=3, greedy=True, use_cache=False)
    assert generate(model, PROMPTS, uncached, tokenizer=TOKENIZER) == \
        generate(reference, PROMPTS, uncached, tokenizer=TOKENIZER)


def test_an_encoder_decoder_decodes_each_source_as_a_written_out_loop_does_with_and_without_the_cache():
    torch.manual_seed(0)
    model = large_weights(EncoderDecoder(EncoderDecoderOptions(n_layer=2, n_head=2, d_model=16), sdpa_attention,
                                         263, 24)).eval()
    bos = TOKENIZER.special.bos
    expected = []
    for source in PROMPTS:  # alone, unpadded: the whole target through the model at every step
        target = [bos]
        for _ in range(8):
            with torch.no_grad():
                target.append(int(model(torch.tensor([source]), decoder_input_ids=torch.tensor([target]))[0, -1]
                                  .argmax()))
        expected.append(target[1:])
    prompts = [[bos]] * len(PROMPTS)
    for use_cache in (True, False):
        greedy = Decoding(max_new_tokens=8, greedy=True, stop_at_eos=False, use_cache=use_cache)
        assert generate(model, prompts, greedy, tokenizer=TOKENIZER, sources=PROMPTS) == expected
    for kind in ("sampled", "beam"):
        decoding = Decoding(max_new_tokens=8, **KINDS[kind])
        assert generate(model, prompts, decoding, tokenizer=TOKENIZER, sources=PROMPTS) == generate(
            model, prompts, decoding.model_copy(update={"use_cache": False}), tokenizer=TOKENIZER, sources=PROMPTS)
    with pytest.raises(ConfigError, match="give one source per prompt"):
        generate(model, prompts, decoding, tokenizer=TOKENIZER)


def test_bad_generation_requests_are_config_errors_naming_the_problem():
    model = decoder(vocab=6)
    with pytest.raises(ConfigError, match=r"num_beams \(7\) is larger than the vocabulary \(6 tokens\)"):
        generate(model, [[1]], Decoding(num_beams=7), tokenizer=TOKENIZER)
    with pytest.raises(ConfigError, match="stop string '' encodes to no token"):
        generate(model, [[1]], Decoding(stop_strings=[""]), tokenizer=TOKENIZER)
    with pytest.raises(ConfigError, match="a prompt is empty"):
        generate(model, [[1], []], Decoding(), tokenizer=TOKENIZER)
    with pytest.raises(ConfigError, match="is an encoder"):
        generate(decoder(vocab=6, causal=False), [[1]], Decoding(), tokenizer=TOKENIZER)
    with pytest.raises(ConfigError, match=r"decoding options: temperature: Input should be greater than 0"):
        Decoding.of({"temperature": 0.0}, where="")
    assert generate(model, [[1], [2, 3]], Decoding(max_new_tokens=0), tokenizer=TOKENIZER) == [[], []]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, docs_corpus):
    tmp_path = tmp_path_factory.mktemp("generate")
    Run(config_of(tmp_path, raw_config(docs_corpus)), tmp_path / "run").train()
    return tmp_path / "run"


def test_generate_streams_one_prompt_and_prints_a_batch_with_the_same_continuations(run_dir, capsys):
    sampled = ["--max-new-tokens", "12", "--seed", "5", "--top-p", "0.9", "--repetition-penalty", "1.1"]
    assert main(["generate", str(run_dir), "--prompt", "The ", *sampled]) == 0
    alone = capsys.readouterr().out
    prompts = run_dir.parent / "prompts.txt"
    prompts.write_text("def \n", encoding="utf-8")  # as long as "The ": learned positions see no padding
    assert main(["generate", str(run_dir), "--prompt", "The ", "--prompts-file", str(prompts), *sampled]) == 0
    assert capsys.readouterr().out.startswith(f"--- 1 ---\n{alone}--- 2 ---\ndef ")
    assert main(["generate", str(run_dir), "--prompt", "The ", "--tokens", "6", "--num-beams", "3", "--no-cache"]) == 0
    assert capsys.readouterr().out.startswith("The ")


@pytest.mark.parametrize("flags, message", [
    (["--num-beams", "300"], "num_beams (300) is larger than the vocabulary (263 tokens)"),
    (["--stop", ""], "the stop string '' encodes to no token"),
    (["--temperature", "0"], "temperature: Input should be greater than 0"),
    (["--source", "Hallo"], "--source is the input of an encoder-decoder"),
])
def test_generate_refuses_bad_requests_with_exit_2_and_one_paragraph(run_dir, capsys, flags, message):
    assert main(["generate", str(run_dir), "--prompt", "a", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.slow
def test_the_decode_benchmark_times_the_engine_with_and_without_the_cache_beside_transformers(tmp_path):
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "decode.py"
    done = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    row = next(line for line in done.stdout.splitlines() if line.startswith("| 64 | 1 |"))
    cells = [cell.strip() for cell in row.split("|")[3:6]]
    assert all(cell.replace(",", "").isdigit() for cell in cells), row


def test_the_terminal_stream_holds_back_a_possible_stop_string_and_a_split_character_until_settled(capsys):
    from hookformer.core.cli import _Stream

    stream = _Stream(TOKENIZER, list(b"> "), ["\n\n"])
    shown = []
    for token in [*b"ab\n", *"é".encode(), *b"c\n"]:
        stream(0, token)
        shown.append(capsys.readouterr().out)
    assert shown == ["> a", "b", "", "", "\né", "c", ""]  # "\n" waits for its successor; é for its second byte
    stream.finish(list("abé\nc".encode()))  # generate returned the tokens before the stop string
    assert capsys.readouterr().out == "\n"
