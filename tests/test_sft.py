"""Supervised fine-tuning: prompt/response examples (data part ``prompt_response``) and the ``sft`` objective, which
learns the response only."""

import json
import random
from pathlib import Path

import pytest
import torch
from hookformer.core.config import compose, validate
from hookformer.core.errors import ConfigError, DataError
from hookformer.core.generate import Decoding, generate
from hookformer.core.loop import Run
from hookformer.core.objective import compute
from hookformer.core.parts import BuildContext
from hookformer.plugins.attention.sdpa import sdpa_attention
from hookformer.plugins.data.prompt_response import PromptResponseOptions
from hookformer.plugins.data.prompt_response import build as build_prompt_response
from hookformer.plugins.models.transformer import Transformer, TransformerOptions
from hookformer.plugins.objectives.clm import CausalLM, CLMOptions
from hookformer.plugins.tokenizers.byte import ByteTokenizer
from hookformer.registry.catalog import Catalog

TOKENIZER = ByteTokenizer()
EOS, PAD = TOKENIZER.special.eos, TOKENIZER.special.pad
RECORDS = [("What is 2+2?", "4"), ("Name a colour", "blue, or red"), ("Say hi", "hi")]


def write(path: Path, records=RECORDS, fields=("prompt", "response")) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(dict(zip(fields, record))) + "\n" for record in records))
    else:
        delimiter = "\t" if path.suffix == ".tsv" else ","
        quote = (lambda text: f'"{text}"') if delimiter == "," else str
        path.write_text("\n".join(delimiter.join(map(quote, row)) for row in [fields, *records]) + "\n")
    return path


def prepare(path: Path, **options):
    source = build_prompt_response(PromptResponseOptions(paths=[str(path)], **{"val_fraction": 0.34, **options}),
                                   BuildContext(run_dir=".", seed=0))
    tables = source.prepare(TOKENIZER)
    return {name: torch.cat([tables["train"][name], tables["validation"][name]]) for name in tables["train"]}, source


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".tsv"])
def test_examples_are_prompt_then_response_then_eos_with_only_the_response_labeled(tmp_path, suffix):
    table, source = prepare(write(tmp_path / f"pairs{suffix}"), block_size=40, prompt_template="Q: {prompt}\nA: ")
    expected = {}
    for prompt, response in RECORDS:
        ids = list(f"Q: {prompt}\nA: ".encode()) + list(response.encode()) + [EOS]
        expected[bytes(ids[:8])] = (ids, len(f"Q: {prompt}\nA: ".encode()))
    assert len(table["input_ids"]) == 3 and source.report["examples"]["train"]["truncated"] == 0
    for ids, labels, mask in zip(table["input_ids"], table["labels"], table["attention_mask"]):
        want, prompt_length = expected[bytes(ids[:8].tolist())]
        n = len(want)
        assert ids[:n].tolist() == want and (ids[n:] == PAD).all()
        assert mask.tolist() == [1] * n + [0] * (40 - n)
        assert labels.tolist() == [-100] * prompt_length + want[prompt_length:] + [-100] * (40 - n)


def responses(table) -> set[tuple[int, ...]]:
    """The labeled tokens of every example."""
    return {tuple(ids[labels != -100].tolist()) for ids, labels in zip(table["input_ids"], table["labels"])}


def test_a_number_column_is_read_as_the_text_of_its_cells(tmp_path):
    table, _ = prepare(write(tmp_path / "numbers.csv", [("1", "2"), ("30", "40"), ("5", "06")]), block_size=8)
    assert responses(table) == {(*b"2", EOS), (*b"40", EOS), (*b"06", EOS)}


def test_long_examples_are_cut_as_configured_and_counted(tmp_path):
    path = write(tmp_path / "long.jsonl", [("abcdefgh", "xyz"), ("p", "0123456789"), ("q", "r")])
    table, source = prepare(path, block_size=8)  # prompt_start: the prompt loses its start
    # "p\n" + "0123456789" + eos: the whole prompt goes first, then the end of the response.
    assert responses(table) == {(*b"xyz", EOS), tuple(b"01234567"), (*b"r", EOS)}
    assert any(ids.tolist() == [*b"fgh\nxyz", EOS] for ids in table["input_ids"])
    counts = source.report["examples"]
    assert counts["train"]["truncated"] + counts["validation"]["truncated"] == 2
    table, source = prepare(path, block_size=8, truncation="end")
    # "abcdefgh\n" fills the block: no response token is left, the example is dropped.
    assert responses(table) == {tuple(b"012345"), (*b"r", EOS)}
    counts = source.report["examples"]
    assert counts["train"]["dropped"] + counts["validation"]["dropped"] == 1


def test_a_missing_field_names_the_file_line_and_option(tmp_path):
    with pytest.raises(DataError, match=r"pairs.jsonl, line 1: .*data.prompt_field"):
        prepare(write(tmp_path / "pairs.jsonl", fields=("question", "response")))
    with pytest.raises(DataError, match=r'pairs.csv: no column "answer" \(data.response_field\)'):
        prepare(write(tmp_path / "pairs.csv"), response_field="answer")
    with pytest.raises(ValueError, match=r"must contain \{prompt\}"):
        PromptResponseOptions(paths=["x.jsonl"], prompt_template="Q:")


def decoder():
    torch.manual_seed(0)
    return Transformer(TransformerOptions(n_layer=1, n_head=2, d_model=32), sdpa_attention, TOKENIZER.vocab_size, 24)


def test_sft_puts_exactly_zero_gradient_on_positions_that_predict_the_prompt_or_padding(tmp_path):
    table, _ = prepare(write(tmp_path / "pairs.jsonl"), block_size=24)
    sft = CausalLM(CLMOptions(), TOKENIZER.vocab_size, labels_field="labels")
    logits = decoder()(table["input_ids"], table["attention_mask"]).detach().requires_grad_()
    result = sft.score({"lm": logits}, table)
    result.loss_sum.backward()
    predicts_response = table["labels"][:, 1:] != -100
    assert result.num_items == int(predicts_response.sum())
    grad = logits.grad[:, :-1]
    assert (grad[~predicts_response] == 0).all() and (logits.grad[:, -1] == 0).all()
    assert (grad[predicts_response].abs().sum(-1) > 0).all()
    # Neither the logits there nor the prompt tokens (which clm would take as targets) change the loss.
    changed_logits = logits.detach().clone()
    changed_logits[:, :-1][~predicts_response] += torch.randn(int((~predicts_response).sum()), logits.shape[-1])
    changed_prompt = dict(table, input_ids=torch.where(table["labels"] == -100, 65, table["input_ids"]))
    assert sft.score({"lm": changed_logits}, table).loss_sum == result.loss_sum
    assert sft.score({"lm": logits.detach()}, changed_prompt).loss_sum == result.loss_sum
    clm = CausalLM(CLMOptions(), TOKENIZER.vocab_size)
    assert clm.score({"lm": logits.detach()}, changed_prompt).loss_sum != clm.score({"lm": logits.detach()},
                                                                                    table).loss_sum


def test_sft_without_labels_in_the_batch_says_which_data_part_makes_them():
    sft = CausalLM(CLMOptions(), TOKENIZER.vocab_size, labels_field="labels")
    with pytest.raises(ConfigError, match="objective sft needs the batch field \"labels\".*prompt_response"):
        compute(sft, decoder(), {"input_ids": torch.zeros(1, 4, dtype=torch.long)})


@pytest.mark.slow
def test_a_tiny_sft_run_learns_to_copy_a_string(tmp_path):
    rng = random.Random(0)
    words = ["".join(rng.choices("abcdefgh", k=rng.randint(2, 4))) for _ in range(600)]
    write(tmp_path / "copy.jsonl", [(f"copy {word}", word) for word in words])
    raw = compose(None, [])
    raw.update(
        data={"name": "prompt_response", "paths": [str(tmp_path / "copy.jsonl")], "block_size": 16,
              "val_fraction": 0.1},
        tokenizer={"name": "byte"},
        model={"name": "transformer", "n_layer": 2, "n_head": 2, "d_model": 64},
        objective={"name": "sft"},
        optimizer={"name": "adamw", "lr": 3e-3},
        scheduler={"name": "constant", "warmup_steps": 5},
        callbacks=[],
        train={"max_steps": 150, "batch_size": 32, "eval_every": 150, "eval_batches": 2, "sample_tokens": 0,
               "progress": False, "device": "cpu"},
    )
    run = Run(validate(raw, Catalog.load()), tmp_path / "run")

    def answered():
        """Share of the validation responses' tokens (eos included) that greedy decoding gets right."""
        right = total = 0
        for ids, labels in zip(run.val_table["input_ids"], run.val_table["labels"]):
            answer = ids[labels != -100].tolist()
            prompt = ids[: int((labels == -100).cumprod(0).sum())].tolist()
            greedy = Decoding(max_new_tokens=len(answer), greedy=True, stop_at_eos=False)
            generated = generate(run.model, [prompt], greedy, tokenizer=run.tokenizer)[0]
            right += sum(a == b for a, b in zip(generated, answer))
            total += len(answer)
        return right / total

    before = answered()
    summary = run.train()
    assert before < 0.1 and answered() > 0.6
    assert summary["val_loss"] < 0.5 * summary["unigram_val_loss"]
