"""Every built-in part passes its stage's conformance kit (hookformer.testing), through the fixtures an author uses;
and each kit fails a part that breaks the rule it checks."""

import json
import math
import random

import pytest
import torch

from hookformer.core.parts import ObjectiveResult
from hookformer.testing import (MIXED_TEXTS, check_data, check_metric, check_objective, check_optimizer,
                                check_scheduler, check_tokenizer)
from hookformer.plugins.tokenizers.byte import ByteTokenizer

IGNORE = -100


def test_builtin_byte_tokenizer_conforms(tokenizer_conformance):
    tokenizer_conformance("byte")


@pytest.mark.parametrize("model_type,vocab_size", [("bpe", 400), ("unigram", 370)])
def test_builtin_sentencepiece_tokenizer_conforms_and_another_vocabulary_has_another_fingerprint(
        tokenizer_conformance, model_type, vocab_size):
    tokenizer_conformance("sentencepiece", {"model_type": model_type, "vocab_size": vocab_size},
                          other_options={"model_type": model_type, "vocab_size": vocab_size - 5})


@pytest.mark.parametrize("name", ["adamw", "sgd", "muon"])
def test_builtin_optimizers_conform(optimizer_conformance, name):
    optimizer_conformance(name)


@pytest.mark.parametrize("name,options", [("constant", {"warmup_steps": 3}), ("linear", {"warmup_steps": 3}),
                                          ("cosine", {"warmup_steps": 3}), ("wsd", {"warmup_steps": 3})])
def test_builtin_schedulers_conform(scheduler_conformance, name, options):
    scheduler_conformance(name, options)


ENCODER = {"name": "transformer", "n_layer": 1, "n_head": 2, "d_model": 16, "causal": False}
PAIR_ENCODER = {**ENCODER, "type_vocab_size": 2}  # sentence pairs come with segment ids
WORDS = "cat dog bird fish tree rock sun moon star cloud rain snow".split()


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return str(path)


@pytest.fixture
def labeled_data(tmp_path):
    """``labeled_data(task)``: the data section of 40 small labeled records for ``task``."""
    rng = random.Random(0)

    def section(task: str) -> dict:
        if task == "sequence_classification":
            records = [{"text": " ".join(rng.choices(WORDS, k=4)), "label": rng.choice("abc")} for _ in range(40)]
        else:
            records = [{"tokens": (words := rng.choices(WORDS, k=4)),
                        "tags": ["A" if w < "f" else "O" for w in words]} for _ in range(40)]
        return {"name": "labeled", "task": task, "train_files": [write_jsonl(tmp_path / f"{task}.jsonl", records)],
                "max_length": 16, "cache_dir": str(tmp_path / "cache")}

    return section


@pytest.fixture
def sentences_data(tmp_path):
    """``sentences_data(task)``: the data section of sentence-level examples from 60 small documents."""
    rng = random.Random(0)
    documents = [{"text": " ".join(f"Doc {d} line {k} says {rng.choice(WORDS)}." for k in range(rng.randint(2, 5)))}
                 for d in range(60)]
    path = write_jsonl(tmp_path / "documents.jsonl", documents)
    return lambda task: {"name": "sentences", "task": task, "block_size": 32,
                         "source": {"name": "text", "paths": [path]}}


def test_builtin_causal_lm_objective_conforms(objective_conformance):
    objective_conformance("clm")


def test_builtin_masked_lm_objective_conforms(objective_conformance):
    objective_conformance("mlm", model=ENCODER)


def test_builtin_sft_objective_conforms(objective_conformance, tmp_path):
    pairs = [{"prompt": f"copy {w}", "response": w} for w in WORDS * 3]
    objective_conformance("sft", data={"name": "prompt_response", "paths": [write_jsonl(tmp_path / "sft.jsonl", pairs)],
                                       "block_size": 16})


@pytest.mark.parametrize("name,task", [("classification", "sequence_classification"),
                                       ("token_classification", "token_classification")])
def test_builtin_classification_objectives_conform(objective_conformance, labeled_data, name, task):
    objective_conformance(name, model=ENCODER, data=labeled_data(task))


@pytest.mark.parametrize("name,task", [("sop", "sop"), ("nsp", "nsp"), ("sentence_order", "permutation")])
def test_builtin_sentence_objectives_conform(objective_conformance, sentences_data, name, task):
    objective_conformance(name, model=PAIR_ENCODER, data=sentences_data(task))


def test_builtin_combined_objective_conforms_with_parts_that_count_items_per_example(objective_conformance,
                                                                                    sentences_data):
    # With mlm among the parts, each micro-batch's mean counts once (see plugins/objectives/combined.py), so the sum
    # and accumulation checks hold only for parts with a fixed number of items per example.
    objective_conformance("combined", {"objectives": [{"name": "sop", "weight": 0.5}]},
                          model=PAIR_ENCODER, data=sentences_data("sop"))


def test_builtin_labeled_prompt_response_and_sentences_data_conform(data_conformance, labeled_data, sentences_data,
                                                                    tmp_path):
    data_conformance("labeled", {k: v for k, v in labeled_data("sequence_classification").items() if k != "name"})
    pairs = [{"prompt": f"copy {w}", "response": w} for w in WORDS * 3]
    data_conformance("prompt_response", {"paths": [write_jsonl(tmp_path / "sft.jsonl", pairs)], "block_size": 16})
    for task in ("sop", "nsp", "permutation"):
        data_conformance("sentences", {k: v for k, v in sentences_data(task).items() if k != "name"})


@pytest.mark.slow
def test_builtin_python_docs_data_conforms(data_conformance):
    data_conformance("builtin", {"block_size": 16})  # reads and tokenizes the whole corpus: about 6 s


@pytest.fixture
def documents(tmp_path):
    """A corpus of distinct documents (streaming holds documents out for validation by a hash of their text)."""
    path = tmp_path / "documents.txt"
    path.write_text("\n\n".join(f"document {i}: {MIXED_TEXTS[i % 6]}" for i in range(200)), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("streaming", [{}, {"streaming": True, "shuffle_buffer": 4, "validation_blocks": 2}],
                         ids=["map-style", "streaming"])
def test_builtin_text_data_conforms(data_conformance, documents, streaming):
    data_conformance("text", {"paths": [documents], "block_size": 16, **streaming})


def result(logits, targets) -> ObjectiveResult:
    return ObjectiveResult(torch.tensor(0.0), int((targets != IGNORE).sum()), logits=logits, targets=targets,
                           ignore_index=IGNORE)


def one_hot(predicted: list[int], classes: int = 3) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(predicted), classes).float()


ACCURACY_RESULTS = [result(one_hot([0, 1, 2]), torch.tensor([0, 1, 1])),
                    result(one_hot([2, 2, 0]), torch.tensor([2, IGNORE, 1]))]


# Scored (prediction, target) pairs: (0, 0) (1, 1) (2, 1) (2, 2) (0, 1). Per class (tp, predicted, actual):
# 0: (1, 2, 1), 1: (1, 1, 3), 2: (1, 2, 1), so precision 1/2, 1, 1/2; recall 1, 1/3, 1; f1 2/3, 1/2, 2/3.
@pytest.mark.parametrize("name,options,expected", [
    ("accuracy", None, {"accuracy": 3 / 5}),
    ("exact_match", None, {"exact_match": 3 / 5}),
    ("f1", None, {"f1": 11 / 18, "precision": 2 / 3, "recall": 7 / 9}),
    ("f1", {"average": "micro"}, {"f1_micro": 3 / 5, "precision_micro": 3 / 5, "recall_micro": 3 / 5}),
])
def test_builtin_classification_metrics_conform(metric_conformance, name, options, expected):
    metric_conformance(name, ACCURACY_RESULTS, expected, options=options)


@pytest.mark.parametrize("name,expected", [("loss", {"loss": 8 / 5}), ("perplexity", {"perplexity": math.exp(8 / 5)})])
def test_builtin_loss_metrics_conform(metric_conformance, name, expected):
    results = [ObjectiveResult(torch.tensor(3.0), 2), ObjectiveResult(torch.tensor(5.0), 3)]
    metric_conformance(name, results, expected)


BIO = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def test_builtin_entity_f1_metric_conforms(metric_conformance):
    # Gold entities: PER 0-1 and LOC 3 (row 1), LOC 1-2 (row 2); predicted: PER 0-1 (right) and LOC 1 (wrong end).
    results = [result(one_hot([1, 2, 0, 0], 5)[None], torch.tensor([[1, 2, 0, 3]])),
               result(one_hot([0, 3, 0, 0], 5)[None], torch.tensor([[0, 3, 4, IGNORE]]))]
    metric_conformance("entity_f1", results, {"entity_precision": 1 / 2, "entity_recall": 1 / 3, "entity_f1": 2 / 5},
                       label_names=BIO)


# -- each kit fails a part that breaks its rule -------------------------------------------------------------------

class LossyTokenizer(ByteTokenizer):
    """Drops tabs: not an exact round trip."""

    def encode(self, text):
        return super().encode(text.replace("\t", ""))


def test_the_tokenizer_kit_fails_a_lossy_round_trip():
    with pytest.raises(AssertionError, match="round trip differs"):
        check_tokenizer(LossyTokenizer())


class MeanLoss:
    """A mean, not a sum: gradient accumulation over micro-batches would weigh them wrongly."""

    def __call__(self, model, batch):
        logits = model(batch["input_ids"])
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), batch["input_ids"][:, 1:].flatten())
        return ObjectiveResult(loss, batch["input_ids"][:, 1:].numel())


def test_the_objective_kit_fails_a_mean_loss(hookformer_tiny_config, tmp_path):
    from hookformer.core.assemble import Assembly

    assembly = Assembly(hookformer_tiny_config(), tmp_path / "run")
    batch = {"input_ids": assembly.prepare_data()["train"][:8]}
    with pytest.raises(AssertionError, match="not a sum"):
        check_objective(MeanLoss(), assembly.model(), batch)


class ForgetfulAccuracy:
    """reset() leaves the counts: a second evaluation would count the first one's batches."""

    def __init__(self):
        self.right = self.total = 0

    def reset(self):
        pass

    def update(self, r):
        scored = r.targets != r.ignore_index
        self.right += int((r.logits.argmax(-1)[scored] == r.targets[scored]).sum())
        self.total += int(scored.sum())

    def compute(self):
        return {"accuracy": self.right / self.total}


def test_the_metric_kit_fails_a_metric_that_does_not_reset():
    with pytest.raises(AssertionError, match="after reset"):
        check_metric(ForgetfulAccuracy(), ACCURACY_RESULTS, {"accuracy": 3 / 5})


class SameFingerprint(ByteTokenizer):
    """Another mapping (bytes shifted by one) under the byte tokenizer's fingerprint: caches would mix them."""

    def encode(self, text):
        return [(i + 1) % 256 for i in super().encode(text)]

    def encode_batch(self, texts):
        return [self.encode(text) for text in texts]

    def decode(self, ids):
        return super().decode([(int(i) - 1) % 256 if int(i) < 256 else i for i in ids])


def test_the_tokenizer_kit_fails_another_mapping_with_the_same_fingerprint():
    check_tokenizer(SameFingerprint())  # a lawful tokenizer by itself
    with pytest.raises(AssertionError, match="same fingerprint"):
        check_tokenizer(ByteTokenizer(), other=SameFingerprint())


class StatelessMomentum(torch.optim.SGD):
    """Its state_dict leaves out the momentum buffers: a resumed run would restart them from zero."""

    def state_dict(self):
        return {**super().state_dict(), "state": {}}


def tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))


def test_the_optimizer_kit_fails_an_optimizer_that_does_not_save_its_state():
    from hookformer.core.params import param_groups

    check_optimizer(lambda model: torch.optim.SGD(param_groups(model), lr=0.1, momentum=0.9), tiny_model)
    with pytest.raises(AssertionError, match="resuming from the state_dict"):
        check_optimizer(lambda model: StatelessMomentum(param_groups(model), lr=0.1, momentum=0.9), tiny_model)


def test_the_optimizer_kit_fails_an_optimizer_that_leaves_out_parameters():
    with pytest.raises(AssertionError, match="leaves out 2 trainable parameters"):
        check_optimizer(lambda model: torch.optim.SGD(model[0].parameters(), lr=0.1), tiny_model)


class ForgetfulLambdaLR(torch.optim.lr_scheduler.LambdaLR):
    """Saves nothing: a resumed run would start the schedule over."""

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def test_the_scheduler_kit_fails_a_schedule_that_restarts_on_resume():
    def decay(step):
        return 1 / (1 + step)

    check_scheduler(lambda optimizer, steps: torch.optim.lr_scheduler.LambdaLR(optimizer, decay))
    with pytest.raises(AssertionError, match="after load_state_dict"):
        check_scheduler(lambda optimizer, steps: ForgetfulLambdaLR(optimizer, decay))


class CountingStream:
    """Batches of consecutive numbers; ``resumable=False`` ignores the state it is given."""

    def __init__(self, resumable: bool):
        self.position, self.resumable = 0, resumable

    def next_batch(self, batch_size):
        rows = torch.arange(self.position, self.position + batch_size * 4).view(batch_size, 4) % 263
        self.position += batch_size * 4
        return {"input_ids": rows}

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        if self.resumable:
            self.position = state["position"]


class CountingSource:
    block_size = 4

    def __init__(self, resumable: bool):
        self.resumable, self.report = resumable, {}

    def texts(self):
        return iter(["0123"])

    def prepare(self, tokenizer):
        return {"train": CountingStream(self.resumable), "validation": torch.zeros(2, 4, dtype=torch.long)}


def test_the_data_kit_fails_a_stream_that_does_not_resume():
    check_data(CountingSource(resumable=True), ByteTokenizer())
    with pytest.raises(AssertionError, match="after load_state_dict"):
        check_data(CountingSource(resumable=False), ByteTokenizer())
