"""``hookformer new-plugin STAGE NAME``: a plugin package for one part, ready to install, whose tests run the
stage's conformance fixture (hookformer.testing) on the part, so that it passes before the author changes a line.

Each template is a minimal working part of its stage, with an options model and ``hookformer_parts()``.
Placeholders: ``${name}`` (the part name), ``${module}`` (hookformer_NAME), ``${title}`` (NAME in CamelCase).
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from hookformer.core.errors import ConfigError
from hookformer.core.parts import STAGES

NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")

_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "hookformer-${name}"
version = "0.1.0"
description = "A hookformer ${stage} part: ${name}"
requires-python = ">=3.10"
dependencies = ["hookformer"]

[project.optional-dependencies]
test = ["pytest>=8"]

[tool.setuptools]
py-modules = ["${module}"]

# hookformer finds plugins through this entry-point group.
[project.entry-points.hookformer]
${name} = "${module}"
"""

_README = """\
# hookformer-${name}

A hookformer ${stage} part, `${name}`. Install it next to hookformer and name it in a run config
(`${usage}`); `hookformer plugins show ${stage}/${name}` lists its options.

    pip install -e .
    python -m pytest tests    # the ${stage} conformance kit of hookformer.testing, run on the part

Edit `${module}.py`: the part, its options model (`${title}Options`) and `hookformer_parts()`, which registers it.
"""

#: How a run config names a part of each stage (for the README).
_USAGE = {"metric": "metrics: [loss, ${name}]", "cleaner": "cleaning: [${name}]", "hook": "hooks: [${name}]"}

_HEADER = '''\
"""hookformer ${stage} part ``${name}`` (see the README)."""

from __future__ import annotations

'''

_REGISTER = '''

@hookimpl
def hookformer_parts():
    return [PartSpec("${stage}", "${name}", "${description}", factory=f"{__name__}:build",
                     options=f"{__name__}:${title}Options"${extra})]
'''

#: stage -> (imports and part, one-line description, extra PartSpec arguments, test body)
_PARTS: dict[str, tuple[str, str, str, str]] = {
    "tokenizer": ('''\
from typing import Iterable

from pydantic import Field

from hookformer.core.hookspecs import hookimpl
from hookformer.core.parts import PartOptions, PartSpec, SpecialTokens

HOOKFORMER_API = ">=1.0,<2"


class ${title}Options(PartOptions):
    version: int = Field(1, ge=1, description="part of the fingerprint: raise it when the mapping changes")


class ${title}Tokenizer:
    """Ids 0..255 are the UTF-8 bytes of the text, then the seven special tokens: any text round-trips."""

    special = SpecialTokens(pad=256, bos=257, eos=258, unk=259, mask=260, cls=261, sep=262)
    vocab_size = 263

    def __init__(self, version: int):
        self.version = version

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(text) for text in texts]

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(i for i in map(int, ids) if 0 <= i < 256).decode("utf-8", errors="replace")

    def fingerprint(self) -> str:
        return f"${name}-v{self.version}"


def build(options: ${title}Options, ctx) -> ${title}Tokenizer:
    return ${title}Tokenizer(options.version)
''', "UTF-8 bytes and seven special tokens", "", '''\
def test_${name}_tokenizer_conforms(tokenizer_conformance):
    tokenizer_conformance("${name}")
'''),
    "model": ('''\
import torch
from pydantic import Field
from torch import nn

from hookformer.core.errors import ConfigError
from hookformer.core.hookspecs import hookimpl
from hookformer.core.parts import PartOptions, PartSpec

HOOKFORMER_API = ">=1.0,<2"


class ${title}Options(PartOptions):
    d_model: int = Field(32, gt=0, description="width of the hidden states")


class ${title}Model(nn.Module):
    """A decoder: each position's hidden state is the mean of the embeddings up to it."""

    causal = True

    def __init__(self, vocab_size: int, max_seq_len: int, d_model: int):
        super().__init__()
        self.vocab_size, self.max_seq_len, self.d_model = vocab_size, max_seq_len, d_model
        self.embed = nn.Embedding(vocab_size, d_model)
        self.position = nn.Embedding(max_seq_len, d_model)
        self.lm = nn.Linear(d_model, vocab_size)
        self.heads = nn.ModuleDict()

    def add_head(self, name: str, module: nn.Module) -> None:
        self.heads[name] = module

    def forward(self, input_ids, attention_mask=None, *, token_type_ids=None, document_ids=None, heads=None):
        if token_type_ids is not None or document_ids is not None:
            raise ConfigError("model ${name} takes neither token_type_ids nor document_ids")
        steps = torch.arange(1, input_ids.shape[1] + 1, device=input_ids.device)
        x = self.embed(input_ids) + self.position(steps - 1)
        hidden = x.cumsum(dim=1) / steps[:, None]
        if heads is None:
            return self.lm(hidden)
        outputs = {"hidden": hidden, "lm": self.lm(hidden) if "lm" in heads else None}
        return {head: outputs[head] if head in outputs else self.heads[head](hidden, attention_mask)
                for head in heads}


def build(options: ${title}Options, ctx) -> ${title}Model:
    # The engine's negotiated shapes: the tokenizer's vocabulary and the data's sequence length.
    return ${title}Model(ctx.shapes.vocab_size, ctx.shapes.max_seq_len, options.d_model)
''', "a decoder that averages the embeddings of the past", "", '''\
def test_${name}_model_trains_with_the_causal_lm_objective(objective_conformance):
    objective_conformance("clm", model={"name": "${name}"})
'''),
    "attention": ('''\
import math

import torch
from pydantic import Field

from hookformer.core.capabilities import AttentionCapabilities
from hookformer.core.hookspecs import hookimpl
from hookformer.core.parts import PartOptions, PartSpec

HOOKFORMER_API = ">=1.0,<2"

#: What the kernel supports; the engine refuses other calls, and the conformance kit checks exactly these cases.
CAPABILITIES = AttentionCapabilities(dtypes=frozenset({"float32"}), dropout=False)


class ${title}Options(PartOptions):
    upcast: bool = Field(True, description="compute the softmax in float32")


class ${title}Attention:
    def __init__(self, upcast: bool):
        self.upcast = upcast

    def __call__(self, q, k, v, *, causal=False, key_padding_mask=None, dropout_p=0.0, scale=None):
        scores = q @ k.transpose(-2, -1) * (scale if scale is not None else 1 / math.sqrt(q.shape[-1]))
        t_q, t_k = q.shape[-2], k.shape[-2]
        if causal:  # the diagonal aligned to the end: query i sees keys up to i + t_k - t_q
            allowed = torch.ones(t_q, t_k, dtype=torch.bool, device=q.device).tril(t_k - t_q)
            scores = scores.masked_fill(~allowed, float("-inf"))
        if key_padding_mask is not None:
            scores = scores.masked_fill(~key_padding_mask[:, None, None, :], float("-inf"))
        weights = torch.softmax(scores.float() if self.upcast else scores, dim=-1).nan_to_num(0.0)
        return weights.to(v.dtype) @ v


def build(options: ${title}Options, ctx) -> ${title}Attention:
    return ${title}Attention(options.upcast)
''', "softmax attention written plainly", ", capabilities=CAPABILITIES", '''\
def test_${name}_kernel_conforms(attention_conformance):
    assert attention_conformance("${name}") > 0
'''),
    "objective": ('''\
import torch.nn.functional as F
from pydantic import Field

from hookformer.core.hookspecs import hookimpl
from hookformer.core.parts import ObjectiveResult, PartOptions, PartSpec, model_inputs

HOOKFORMER_API = ">=1.0,<2"
IGNORE = -100


class ${title}Options(PartOptions):
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="label smoothing of the cross-entropy")


class ${title}Objective:
    """Next-token cross-entropy, summed over the predicted tokens (the engine divides by num_items)."""

    def __init__(self, label_smoothing: float):
        self.label_smoothing = label_smoothing

    def __call__(self, model, batch: dict) -> ObjectiveResult:
        logits = model(batch["input_ids"], **model_inputs(batch))[:, :-1]
        targets = batch["input_ids"][:, 1:]
        if "attention_mask" in batch:
            targets = targets.masked_fill(batch["attention_mask"][:, 1:] == 0, IGNORE)
        loss_sum = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                                   ignore_index=IGNORE, reduction="sum", label_smoothing=self.label_smoothing)
        return ObjectiveResult(loss_sum, int((targets != IGNORE).sum()), logits=logits, targets=targets,
                               ignore_index=IGNORE)


def build(options: ${title}Options, ctx) -> ${title}Objective:
    return ${title}Objective(options.label_smoothing)
''', "next-token cross-entropy", "", '''\
def test_${name}_objective_conforms(objective_conformance):
    objective_conformance("${name}")
'''),
    "optimizer": ('''\
import torch
from pydantic import Field

from hookformer.core.hookspecs import hookimpl
from hookformer.core.params import with_weight_decay
from hookformer.core.parts import PartOptions, PartSpec

HOOKFORMER_API = ">=1.0,<2"


class ${title}Options(PartOptions):
    lr: float = Field(1e-2, gt=0.0, description="peak learning rate")
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0, description="on the groups the engine marks for decay")


def build(options: ${title}Options, ctx) -> torch.optim.Optimizer:
    # The engine's parameter groups (every trainable parameter once, the heads' own lr): always start from them.
    groups = with_weight_decay(ctx.param_groups, options.weight_decay)
    return torch.optim.SGD(groups, lr=options.lr, momentum=options.momentum)
''', "SGD with momentum over the engine's parameter groups", "", '''\
def test_${name}_optimizer_conforms(optimizer_conformance):
    optimizer_conformance("${name}")
'''),
    "scheduler": ('''\
from pydantic import Field
from torch.optim.lr_scheduler import LambdaLR

from hookformer.core.hookspecs import hookimpl
from hookformer.core.parts import PartOptions, PartSpec

HOOKFORMER_API = ">=1.0,<2"


class ${title}Options(PartOptions):
    warmup_steps: int = Field(0, ge=0, description="steps of linear warmup from 0 to the peak learning rate")


def build(options: ${title}Options, ctx) -> LambdaLR:
    """Linear warmup, then linear decay to 0 at the run's last step (ctx.total_steps)."""
    warmup, total = options.warmup_steps, max(1, ctx.total_steps or 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return LambdaLR(ctx.optimizer, factor)
''', "linear warmup, then linear decay to 0", "", '''\
def test_${name}_scheduler_conforms(scheduler_conformance):
    scheduler_conformance("${name}", {"warmup_steps": 3})
'''),
    "metric": ('''\
from pydantic import Field

from hookformer.core.hookspecs import hookimpl
from hookformer.core.parts import PartOptions, PartSpec

HOOKFORMER_API = ">=1.0,<2"


class ${title}Options(PartOptions):
    scale: float = Field(1.0, gt=0.0, description="factor of the reported mean loss")


class ${title}Metric:
    """The mean loss per item over the evaluation batches, times ``scale``."""

    def __init__(self, scale: float):
        self.scale = scale
        self.reset()

    def reset(self) -> None:
        self.loss_sum, self.items = 0.0, 0

    def update(self, result) -> None:  # result: hookformer.core.parts.ObjectiveResult
        self.loss_sum += float(result.loss_sum)
        self.items += result.num_items

    def compute(self) -> dict[str, float]:
        return {"${name}": self.scale * self.loss_sum / max(1, self.items)}


def build(options: ${title}Options, ctx) -> ${title}Metric:
    return ${title}Metric(options.scale)
''', "mean loss per item, scaled", "", '''\
import torch

from hookformer.core.parts import ObjectiveResult


def test_${name}_metric_conforms(metric_conformance):
    results = [ObjectiveResult(torch.tensor(3.0), 2), ObjectiveResult(torch.tensor(5.0), 3)]
    metric_conformance("${name}", results, {"${name}": 8 / 5})
    metric_conformance("${name}", results, {"${name}": 16 / 5}, options={"scale": 2.0})
'''),
    "data": ('''\
from pathlib import Path

import torch
from pydantic import Field

from hookformer.core.hookspecs import hookimpl
from hookformer.core.parts import PartOptions, PartSpec

HOOKFORMER_API = ">=1.0,<2"


class ${title}Options(PartOptions):
    paths: list[str] = Field(min_length=1, description="UTF-8 text files; documents are separated by blank lines")
    block_size: int = Field(64, gt=1, description="tokens per training block")
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5, description="share of the documents held out (the last ones)")


class ${title}Data:
    def __init__(self, options: ${title}Options):
        self.options = options
        self.block_size = options.block_size
        self.report: dict = {}
        documents = [d for p in options.paths for d in Path(p).read_text(encoding="utf-8").split("\\n\\n") if d]
        held_out = max(1, int(len(documents) * options.val_fraction))
        self.splits = {"train": documents[:-held_out], "validation": documents[-held_out:]}

    def texts(self):
        return iter(self.splits["train"])

    def prepare(self, tokenizer) -> dict:
        """Each split's documents, eos after each, packed into (N, block_size) blocks (the rest dropped)."""
        tables = {}
        for split, documents in self.splits.items():
            tokens = [i for ids in tokenizer.encode_batch(documents) for i in (*ids, tokenizer.special.eos)]
            blocks = len(tokens) // self.block_size
            tables[split] = torch.tensor(tokens[:blocks * self.block_size], dtype=torch.long).view(blocks, -1)
            self.report[split] = {"documents": len(documents), "tokens": len(tokens), "blocks": blocks}
        return tables


def build(options: ${title}Options, ctx) -> ${title}Data:
    return ${title}Data(options)
''', "packed blocks of the documents of text files", "", '''\
def test_${name}_data_conforms(data_conformance, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\\n\\n".join(f"Document {i}: some text to pack." for i in range(40)), encoding="utf-8")
    data_conformance("${name}", {"paths": [str(corpus)], "block_size": 16})
'''),
    "cleaner": ('''\
from pydantic import Field

from hookformer.core.hookspecs import hookimpl
from hookformer.core.parts import PartOptions, PartSpec

HOOKFORMER_API = ">=1.0,<2"


class ${title}Options(PartOptions):
    min_chars: int = Field(1, ge=1, description="documents shorter than this after cleaning are removed")


class ${title}Cleaner:
    """Removes the spaces and tabs at the end of every line, then documents shorter than ``min_chars``."""

    stateful = False  # no state across batches: the chain may run it in several processes
    name = "${name}"

    def __init__(self, min_chars: int):
        self.min_chars = min_chars

    def __call__(self, texts: list[str]) -> list[str | None]:
        cleaned = ["\\n".join(line.rstrip(" \\t") for line in text.split("\\n")) for text in texts]
        return [text if len(text) >= self.min_chars else None for text in cleaned]

    def fingerprint(self) -> str:
        return f"${name}-v1-min{self.min_chars}"


def build(options: ${title}Options, ctx) -> ${title}Cleaner:
    return ${title}Cleaner(options.min_chars)
''', "strips trailing blanks of lines, removes short documents", "", '''\
def test_${name}_cleans_each_document_and_removes_short_ones(hookformer_catalog, tmp_path):
    from hookformer.core.config import resolve_part
    from hookformer.core.parts import BuildContext

    cleaner = resolve_part("cleaning.0", "cleaner", {"name": "${name}", "min_chars": 2}, hookformer_catalog).build(
        BuildContext(run_dir=tmp_path))
    assert cleaner(["a b  \\nc\\t", " ", "x"]) == ["a b\\nc", None, None]


def test_text_data_cleaned_by_${name}_conforms(data_conformance, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\\n\\n".join(f"Document {i}:  \\ttext " for i in range(40)), encoding="utf-8")
    data_conformance("text", {"paths": [str(corpus)], "block_size": 16}, cleaning=["${name}"])
'''),
    "hook": ('''\
from pydantic import Field

from hookformer.core.hookspecs import hookimpl
from hookformer.core.parts import PartOptions, PartSpec

HOOKFORMER_API = ">=1.0,<2"


class ${title}Options(PartOptions):
    stages: list[str] = Field(["model"], description="the stages whose built parts are recorded")


class ${title}Hook:
    """A build wrapper: records the section of every part built in ``stages``; run events can be added the same
    way (hookformer_step_end, hookformer_eval_end... see hookformer.core.hookspecs)."""

    def __init__(self, stages: list[str]):
        self.stages = stages
        self.built: list[str] = []

    @hookimpl(wrapper=True)
    def hookformer_build(self, stage: str, section: str):
        part = yield
        if stage in self.stages:
            self.built.append(section)
        return part


def build(options: ${title}Options, ctx) -> ${title}Hook:
    return ${title}Hook(options.stages)
''', "records the parts a run builds", "", '''\
def test_${name}_sees_the_parts_the_run_builds(hookformer_tiny_config, tmp_path):
    from hookformer.core.assemble import Assembly

    assembly = Assembly(hookformer_tiny_config(hooks=[{"name": "${name}", "stages": ["model", "objective"]}]),
                        tmp_path / "run")
    assembly.prepare_data()  # the data and its tokenizer decide the model's shapes
    assembly.objective()
    assert assembly.hooks[0].built == ["model", "objective"]
'''),
}


#: Stages without a template, and where a plugin author finds a complete part of that stage instead.
NOT_SCAFFOLDED = {"family": "a Hugging Face model family is a mapping written as data; start from "
                            "hookformer/plugins/families/gpt2.py (see README, Hugging Face models in and out)."}


def scaffold(stage: str, name: str, directory: Path, catalog=None) -> Path:
    """Write the package ``directory/hookformer-NAME`` for a part ``name`` of ``stage``; returns its path.
    ConfigError for an unknown stage, a name that is not a lowercase identifier, a name that ``catalog`` already
    registers for the stage, or an existing folder."""
    if stage in NOT_SCAFFOLDED:
        raise ConfigError(f"new-plugin has no template for the {stage} stage yet: {NOT_SCAFFOLDED[stage]}")
    if stage not in _PARTS:
        raise ConfigError(f'unknown stage "{stage}"; stages are: {", ".join(STAGES)}.')
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(f'invalid part name "{name}": use lowercase letters, digits and underscores, starting with '
                          f"a letter (it names the module hookformer_{name}).")
    if catalog is not None and name in catalog.names(stage):
        raise ConfigError(f'a {stage} part named "{name}" is already registered; choose another name.')
    root = Path(directory) / f"hookformer-{name}"
    if root.exists():
        raise ConfigError(f"{root} already exists; choose another --dir or name.")
    part, description, extra, test = _PARTS[stage]
    values = {"stage": stage, "name": name, "module": f"hookformer_{name}", "description": description,
              "title": "".join(word.capitalize() for word in name.split("_")), "extra": extra}
    values["usage"] = Template(_USAGE.get(stage, f"{stage}: {{name: ${{name}}}}")).substitute(values)
    files = {
        "pyproject.toml": _PYPROJECT,
        "README.md": _README,
        f"hookformer_{name}.py": _HEADER + part + _REGISTER,
        f"tests/test_{name}.py": f'"""The {stage} conformance kit of hookformer.testing, run on the part."""\n\n'
                                 + ("\n" if test.startswith("def") else "") + test,
    }
    for relative, template in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(template).substitute(values), encoding="utf-8")
    return root
