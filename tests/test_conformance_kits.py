"""Every built-in part passes its stage's conformance kit (hookformer.testing), through the fixtures an author uses;
and each kit fails a part that breaks the rule it checks."""

import pytest
import torch

from hookformer.core.parts import ObjectiveResult
from hookformer.testing import MIXED_TEXTS, check_metric, check_objective, check_tokenizer
from hookformer.plugins.tokenizers.byte import ByteTokenizer

IGNORE = -100


@pytest.mark.parametrize("options", [None, {"model_type": "bpe", "vocab_size": 400},
                                     {"model_type": "unigram", "vocab_size": 370}], ids=["byte", "bpe", "unigram"])
def test_builtin_tokenizers_conform(tokenizer_conformance, options):
    tokenizer_conformance("byte" if options is None else "sentencepiece", options)


@pytest.mark.parametrize("name", ["adamw", "sgd", "muon"])
def test_builtin_optimizers_conform(optimizer_conformance, name):
    optimizer_conformance(name)


@pytest.mark.parametrize("name,options", [("constant", {"warmup_steps": 3}), ("linear", {"warmup_steps": 3}),
                                          ("cosine", {"warmup_steps": 3}), ("wsd", {"warmup_steps": 3})])
def test_builtin_schedulers_conform(scheduler_conformance, name, options):
    scheduler_conformance(name, options)


def test_builtin_causal_lm_objective_conforms(objective_conformance):
    objective_conformance("clm")


def test_builtin_masked_lm_objective_conforms(objective_conformance):
    objective_conformance("mlm", model={"name": "transformer", "n_layer": 1, "n_head": 2, "d_model": 16,
                                        "causal": False})


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


def test_builtin_accuracy_metric_conforms(metric_conformance):
    metric_conformance("accuracy", ACCURACY_RESULTS, {"accuracy": 3 / 5})


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
