"""The named recipes shipped in plugins/ (``hookformer train NAME``)."""

from pathlib import Path

import pytest

from hookformer.core.config import compose, config_file, read_yaml, recipes, validate
from hookformer.registry.catalog import Catalog


@pytest.mark.parametrize("name", ["nanogpt", "speedrun"])
def test_the_recipe_is_shipped_and_validates_over_the_default_run(name):
    assert name in recipes()
    validate(compose(Path(name), []), Catalog.load())


def test_speedrun_sets_no_sizes_tokenizer_or_data_so_it_applies_to_any_corpus_and_scale():
    speedrun = read_yaml(config_file(Path("speedrun")))
    assert not {"data", "tokenizer", "train"} & set(speedrun)
    assert not {"n_layer", "n_head", "d_model", "d_ff", "vocab_size", "max_seq_len"} & set(speedrun["model"])


def test_nanogpt_is_nanogpts_cpu_quick_start():
    config = validate(compose(Path("nanogpt"), []), Catalog.load())
    model, optimizer, scheduler = (config.parts[s] for s in ("model", "optimizer", "scheduler"))
    assert (model.options.n_layer, model.options.n_head, model.options.d_model, model.options.dropout) == (4, 4, 128, 0)
    assert config.parts["data"].options.block_size == 64 and config.train.batch_size == 12
    assert (optimizer.name, optimizer.options.lr, optimizer.options.betas) == ("adamw", 1e-3, (0.9, 0.99))
    assert (scheduler.name, scheduler.options.warmup_steps, config.train.max_steps) == ("cosine", 100, 2000)
