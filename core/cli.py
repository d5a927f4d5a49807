"""The ``hookformer`` command line: ``train``, ``finetune``, ``data``, ``evaluate``, ``generate``, ``import``,
``export``, ``plugins list``, ``plugins show``.

A user error (bad config, data or plugin) prints one paragraph and exits with code 2; ``--debug`` shows the
traceback. Listing plugins imports no torch, datasets or triton.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
from pathlib import Path

from hookformer.core import interrupt
from hookformer.core.errors import ConfigError, HookformerError
from hookformer.core.parts import STAGES

EXIT_USER_ERROR = 2


def _plugin_flags(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """The global flags. They are accepted before and after the subcommand; only the top-level parser sets
    defaults, so a subcommand parser does not overwrite a flag given before it."""
    default = (lambda value: value) if defaults else (lambda value: argparse.SUPPRESS)
    parser.add_argument("--debug", action="store_true", default=default(False), help="show tracebacks of errors")
    parser.add_argument("-p", dest="plugin_flags", action="append", default=default([]), metavar="NAME",
                        help="-p no:NAME skips the plugin entry point NAME; -p NAME loads it when autoload is off")
    parser.add_argument("--no-autoload", action="store_true", default=default(False),
                        help="load only hookformer's own plugins and those named with -p "
                             "(also: HOOKFORMER_DISABLE_PLUGIN_AUTOLOAD=1)")


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a count of 0 or more, got {value}")
    return value


def _path(text: str) -> Path:
    if "\x00" in text:  # the operating system refuses such a path with a ValueError, not an OSError
        raise argparse.ArgumentTypeError("a path cannot hold a NUL byte")
    return Path(text)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from hookformer.core.config import recipes

    common = argparse.ArgumentParser(add_help=False)
    _plugin_flags(common, defaults=False)
    parser = argparse.ArgumentParser(prog="hookformer", description="Pretrain and fine-tune Transformer language "
                                     "models from registered parts.")
    _plugin_flags(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", required=True)

    config_help = ("YAML config (sections: tokenizer, model, attention, objective, optimizer, scheduler, metrics, "
                   "data, cleaning, hooks, train), or the name of a built-in recipe: " + ", ".join(recipes()))
    train = commands.add_parser("train", parents=[common], help="train a model (the default pretraining run "
                                "on the built-in corpus when no config is given)")
    train.add_argument("config", nargs="?", type=_path, help=config_help)
    _run_arguments(train)
    train.add_argument("--resume", type=_path, metavar="RUN_DIR", help="continue RUN_DIR from its last checkpoint "
                       "(from step 0 when it stopped before its first one)")
    train.add_argument("--checkpoint", metavar="step_N", help="with --resume: continue from this checkpoint of the "
                       "run instead of the newest (e.g. when the newest is damaged)")

    finetune = commands.add_parser("finetune", parents=[common], help="fine-tune a pretrained run: the same as "
                                   "train CONFIG --set train.init_from=PRETRAINED_RUN")
    finetune.add_argument("pretrained", type=_path, metavar="PRETRAINED_RUN", help="the pretrained run's directory "
                          "(its latest checkpoint), or one of its checkpoint directories")
    finetune.add_argument("config", type=_path, help=config_help)
    _run_arguments(finetune)

    evaluate = commands.add_parser("evaluate", parents=[common], help="score a run's checkpoint with its metrics, "
                                   "on its validation split or on other data (--set data....); writes nothing there")
    evaluate.add_argument("run_dir", type=_path, metavar="RUN_DIR")
    evaluate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                          help="override a field of the run's config, e.g. --set data.paths=[other.txt]")
    evaluate.add_argument("--checkpoint", default="latest", help="latest (default), best (the best evaluation of an "
                          "early-stopping run), step_N (a checkpoint of the run), or a checkpoint directory")
    evaluate.add_argument("--split", choices=["validation", "train"], default="validation",
                          help="which split of the data to score (default: validation)")
    evaluate.add_argument("--examples", type=_count, default=None, metavar="N",
                          help="score the first N examples only (default: all of the split)")
    evaluate.add_argument("--output", type=_path, help="also write the results to this JSON file")

    data = commands.add_parser("data", parents=[common], help="run the data stages alone (read, clean, train the "
                               "tokenizer, tokenize, pack) and print what each did")
    data.add_argument("config", nargs="?", type=_path, help="YAML config, as for train (only data, cleaning, "
                      "tokenizer and train.seed matter)")
    data.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config field, e.g. --set data.num_proc=2")
    data.add_argument("--examples", type=_count, default=3, metavar="N",
                      help="examples of removed text to show per cleaning step (default 3; the report keeps as many "
                           "as the data part does, e.g. data.report_examples)")
    data.add_argument("--run-dir", type=_path, help="keep the trained tokenizer, config.yaml and data_report.json in "
                      "this new or empty folder (default: a temporary folder, removed at the end; the data caches "
                      "are kept either way)")

    generate = commands.add_parser("generate", parents=[common], help="generate text from a run's latest "
                                   "checkpoint; one prompt is streamed to the terminal as its tokens come")
    generate.add_argument("run_dir", type=_path, metavar="RUN_DIR")
    generate.add_argument("--prompt", action="append", default=[], help="text to continue; repeat for a batch "
                          "(default: one continuation of the start of a document)")
    generate.add_argument("--prompts-file", type=_path, metavar="FILE", help="more prompts, one per line")
    generate.add_argument("--source", action="append", default=[], help="encoder-decoder runs: a text to encode "
                          "(the decoder starts from bos); repeat for a batch")
    generate.add_argument("--max-new-tokens", "--tokens", dest="max_new_tokens", type=int, default=200,
                          help="tokens to generate at most (default 200)")
    generate.add_argument("--greedy", action="store_true", help="always take the most likely token")
    generate.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default 0.8)")
    generate.add_argument("--top-k", type=int, default=40, help="sample from the k most likely tokens (default 40; "
                          "0: all)")
    generate.add_argument("--top-p", type=float, help="nucleus sampling: from the smallest set of tokens with "
                          "probability >= p")
    generate.add_argument("--repetition-penalty", type=float, default=1.0, help="above 1: penalize the tokens "
                          "already in the prompt or output (CTRL's penalty; default 1: off)")
    generate.add_argument("--num-beams", type=int, default=1, help="beam search with this many beams (printed "
                          "at the end)")
    generate.add_argument("--length-penalty", type=float, default=1.0, help="beam search: score / length ** this "
                          "(default 1)")
    generate.add_argument("--stop", action="append", default=[], metavar="TEXT", help="end a continuation before "
                          "this text; repeatable (eos always ends one)")
    generate.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    generate.add_argument("--no-cache", action="store_true", help="recompute the whole context at every step "
                          "instead of using the model's KV cache (the same tokens, slower)")
    generate.add_argument("--checkpoint", default="latest", help="latest (default), best, step_N, or a checkpoint "
                          "directory")

    hf_import = commands.add_parser("import", parents=[common], help="make a run directory from a local Hugging "
                                    "Face model directory (GPT-2, Llama/Mistral, BERT; safetensors only)")
    hf_import.add_argument("hf_dir", type=Path, metavar="HF_DIR", help="holds config.json, model.safetensors (or "
                           "shards and their index) and tokenizer.json")
    hf_import.add_argument("--run-dir", type=Path, required=True, help="the new run directory to write")

    export = commands.add_parser("export", parents=[common], help="write a run's checkpoint as a Hugging Face model "
                                 "directory that transformers loads without custom code")
    export.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    export.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="a new directory")
    export.add_argument("--format", choices=["hf"], required=True, help="hf: config.json, model.safetensors and "
                        "the tokenizer's files")
    export.add_argument("--checkpoint", default="latest", help="latest (default), best, or a checkpoint directory")

    plugins = commands.add_parser("plugins", parents=[common], help="list and inspect registered parts")
    plugin_commands = plugins.add_subparsers(dest="plugins_command", required=True)
    plugin_commands.add_parser("list", parents=[common], help="every registered part, by stage")
    show = plugin_commands.add_parser("show", parents=[common], help="a part's description, options and provider")
    show.add_argument("name", help="NAME, or STAGE/NAME when the name exists in several stages")

    new_plugin = commands.add_parser("new-plugin", parents=[common], help="write a plugin package for a new part: "
                                     "pyproject, the part, its options and a conformance test that passes")
    new_plugin.add_argument("stage", metavar="STAGE", help="the part's stage: " + ", ".join(STAGES))
    new_plugin.add_argument("name", metavar="NAME", help="the part's name (lowercase letters, digits, underscores)")
    new_plugin.add_argument("--dir", type=Path, default=Path("."), help="where the folder hookformer-NAME is written "
                            "(default: the current directory)")
    return parser


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``train`` and ``finetune`` share."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set optimizer.lr=3e-4 --set attention.name=naive")
    parser.add_argument("--run-dir", type=_path, help="where the run is written (default: runs/run-DATE-TIME)")
    parser.add_argument("--nproc", type=_positive, default=1, metavar="N", help="train with N processes on this "
                        "machine: runs torchrun --standalone --nproc_per_node N -m hookformer ... (set "
                        "train.distributed.strategy)")


def _catalog(args, strict: bool = True):
    """The catalog of the command line's plugin flags. Commands that run something load it ``strict`` (any plugin
    problem stops them, every problem named with its -p no:NAME switch); the plugin listings show what loaded and
    report the problems after it."""
    from hookformer.registry.catalog import Catalog

    disabled = {flag[3:] for flag in args.plugin_flags if flag.startswith("no:")}
    enabled = {flag for flag in args.plugin_flags if not flag.startswith("no:")}
    return Catalog.load(disabled=disabled, enabled=enabled, autoload=False if args.no_autoload else None,
                        strict=strict)


def _report_problems(catalog) -> None:
    """After a listing: each plugin that could not be loaded, with its error and the switch that skips it."""
    if catalog.problems:
        print(f"\nplugins that could not be loaded ({len(catalog.problems)}); commands that run a config refuse "
              f"to start until they are fixed or skipped:")
        for problem in catalog.problems:
            print(textwrap.fill(str(problem), 100, initial_indent="  - ", subsequent_indent="    "))
        print(f"hookformer: warning: {len(catalog.problems)} plugin(s) could not be loaded (listed at the end)",
              file=sys.stderr)


def cmd_plugins_list(args) -> int:
    catalog = _catalog(args, strict=False)
    width = max((len(name) for entries in catalog.stages().values() for name in entries), default=0)
    for stage, entries in catalog.stages().items():
        print(f"{stage}:")
        for name, entry in sorted(entries.items()):
            print(f"  {name:<{width}}  {entry.spec.description}  [{entry.provider}]")
    _report_problems(catalog)
    return 0


_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="), ("min_length", "length >="),
           ("max_length", "length <="))


def _bounds(metadata) -> str:
    """The numeric and length constraints among pydantic metadata, e.g. ``>= 0, < 1``."""
    metadata = [inner for item in metadata for inner in getattr(item, "metadata", [item])]  # Field(...) holds its own
    found = [f"{sign} {getattr(item, key)}" for item in metadata for key, sign in _BOUNDS
             if getattr(item, key, None) is not None]
    return ", ".join(found)


def type_name(annotation) -> str:
    """An option's type as a reader writes it: ``tuple[float (>= 0), float]``, ``'bpe' | 'unigram'``, ``int | None``."""
    import types
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        bounds = _bounds(args[1:])
        return type_name(args[0]) + (f" ({bounds})" if bounds else "")
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in args)
    if origin is typing.Literal:
        return " | ".join(repr(arg) for arg in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_name(arg) for arg in args)}]"
    if annotation is type(None):
        return "None"
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


def _describe_options(model) -> list[str]:
    lines = []
    for name, field in model.model_fields.items():
        bounds = _bounds(field.metadata)
        annotation = type_name(field.annotation) + (f" ({bounds})" if bounds else "")
        default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
        lines.append(f"  {name}: {annotation} = {default}" + (f"\n      {field.description}" if field.description
                                                               else ""))
    return lines


def cmd_plugins_show(args) -> int:
    catalog = _catalog(args, strict=False)
    matches = catalog.find(args.name)
    if not matches:
        raise ConfigError(f'no part is named "{args.name}"; `hookformer plugins list` shows every part.')
    if len(matches) > 1:
        stages = ", ".join(f"{m.spec.stage}/{args.name}" for m in matches)
        raise ConfigError(f'"{args.name}" is a part of several stages; name one of: {stages}.')
    entry = matches[0]
    spec = entry.spec
    print(f"{spec.stage}/{spec.name}  [{entry.provider}, entry point {entry.origin.entry_point} = "
          f"{entry.origin.value}]")
    print(textwrap.fill(spec.description, 100, initial_indent="  ", subsequent_indent="  "))
    options = _describe_options(entry.options_model())
    print("\n".join(["options:", *options]) if options else "options: none")
    capabilities = entry.capabilities()
    if capabilities is not None:
        print(f"priority: {spec.priority} (attention.name: auto tries the kernels that can run a call, highest "
              f"priority first)")
        print("capabilities:")
        values = capabilities.model_dump() if hasattr(capabilities, "model_dump") else dict(capabilities)
        for key, value in values.items():
            if isinstance(value, (set, frozenset)):
                value = ", ".join(sorted(value))
            elif isinstance(value, dict):
                value = "; ".join(f"{k}: {v}" for k, v in value.items())
            print(f"  {key}: {value}")
    return 0


def _saved_config(run_dir: Path) -> dict:
    """The resolved config a run saved in its directory."""
    from hookformer.core.config import read_yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a hookformer run directory ({path} is missing).")
    return read_yaml(path)


#: The sections each command that rebuilds a saved run uses; it validates only these. Each rebuilds the model as it
#: was trained, through the run's hook parts: a build wrapper may have changed it (``lora`` adds adapters, which
#: export merges through hookformer_export_model).
EVALUATE_SECTIONS = ("data", "cleaning", "tokenizer", "model", "attention", "objective", "metrics", "hooks", "train")
GENERATE_SECTIONS = ("tokenizer", "model", "attention", "objective", "hooks", "train")
EXPORT_SECTIONS = GENERATE_SECTIONS


def _installed_hooks(raw: dict, catalog, command: str) -> dict:
    """``raw`` without the hook parts that are no longer installed, each named in a warning: evaluate and generate
    emit no run events, so a hook part that only listens to them (a logger) is not needed there. One whose build
    wrapper changed the model is: its tensors are then refused by name when the checkpoint loads."""
    key = "hooks" if "hooks" in raw else "callbacks"
    hooks = raw.get(key)
    if not isinstance(hooks, list):
        return raw
    installed = set(catalog.names("hook"))
    kept = []
    for entry in hooks:
        name = entry.get("name") if isinstance(entry, dict) else entry
        if isinstance(name, str) and name not in installed:
            print(f"hookformer: warning: hook part \"{name}\" of this run is not installed; {command} runs "
                  "without it", file=sys.stderr)
        else:
            kept.append(entry)
    return {**raw, key: kept}


def _validate_saved(raw: dict, run_dir: Path, args, sections: tuple[str, ...] | None = None):
    """A saved run's config (with --set overrides applied), validated against what is installed now: a part whose
    distribution is gone names the package to install, and a part now provided by another version or distribution
    than the one that made the run is a warning."""
    from hookformer.core import config as run_config
    from hookformer.core import provenance
    from hookformer.core.config import PartChoice

    saved = provenance.read(run_dir)
    catalog = _catalog(args)
    if args.command in ("evaluate", "generate"):
        raw = _installed_hooks(raw, catalog, args.command)
    config = run_config.validate(raw, catalog, sections=sections, provenance=saved)
    choices: list[PartChoice] = [*config.parts.values(), *config.metrics, *config.hooks, *config.cleaning]
    now = {choice.section: provenance.entry_record(choice.stage, choice.name, choice.entry) for choice in choices}
    for note in provenance.changes(saved, now):
        print(f"hookformer: warning: {note}", file=sys.stderr)
    return config


def _launch(args) -> int:
    """``--nproc N``: the same command line, without ``--nproc``, in N processes started by torchrun."""
    if "WORLD_SIZE" in os.environ:
        raise ConfigError("--nproc starts torchrun, but this process already runs under torchrun; drop --nproc.")
    rest, argv = [], iter(args.argv)
    for arg in argv:
        if arg == "--nproc":
            next(argv, None)
        elif not arg.startswith("--nproc="):
            rest.append(arg)
    import subprocess

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.nproc),
               "-m", "hookformer", *rest]
    return subprocess.run(command).returncode


def cmd_train(args) -> int:
    from hookformer.core import config as run_config

    if args.nproc > 1:
        return _launch(args)
    if args.resume is not None:
        if args.config is not None:
            raise ConfigError("--resume continues a run with the config saved in it (RUN_DIR/config.yaml); drop the "
                              "CONFIG argument and change fields with --set if needed.")
        if args.run_dir is not None and args.run_dir != args.resume:
            raise ConfigError("--resume RUN_DIR already names the run directory; drop --run-dir.")
        raw = _saved_config(args.resume)
        for assignment in args.overrides:
            raw = run_config.apply_override(raw, assignment)
        run_dir = args.resume
        config = _validate_saved(raw, run_dir, args)
    else:
        if args.checkpoint is not None:
            raise ConfigError("--checkpoint chooses the checkpoint --resume continues from; add --resume RUN_DIR.")
        raw = run_config.compose(args.config, args.overrides)
        run_dir = args.run_dir or Path("runs") / time.strftime("run-%Y%m%d-%H%M%S")
        config = run_config.validate(raw, _catalog(args))

    from hookformer.core import distributed  # heavy imports (torch) only after the config is valid
    from hookformer.core.loop import resolve_device

    world = distributed.init(config.train.distributed, resolve_device(config.train.device))
    if world.size > 1:  # torchrun's failure summary then shows the traceback of the rank that failed
        from torch.distributed.elastic.multiprocessing.errors import record

        return record(_train_ranks)(args, config, run_dir, world)
    return _train_ranks(args, config, run_dir, world)


def cmd_finetune(args) -> int:
    """``finetune PRETRAINED_RUN CONFIG`` is ``train CONFIG --set train.init_from=PRETRAINED_RUN``."""
    args.resume = args.checkpoint = None
    args.overrides = [*args.overrides, f"train.init_from={json.dumps(str(args.pretrained))}"]
    return cmd_train(args)


def _train_ranks(args, config, run_dir: Path, world) -> int:
    from hookformer.core import checkpoint, distributed, interrupt, runfiles
    from hookformer.core.loop import Run

    try:
        run_dir = world.broadcast(run_dir)  # a default name holds the time, which may differ between ranks
        if args.resume is None and runfiles.holds_files(run_dir):
            raise ConfigError(f"run directory {run_dir} already exists and is not empty; choose another --run-dir, "
                              f"or continue that run with --resume {run_dir}.")
        resume = args.resume is not None and (args.checkpoint or checkpoint.newest(run_dir) is not None)
        if args.resume is not None and not resume and world.is_main:  # stopped before its first checkpoint
            print(f"hookformer: {run_dir} has no checkpoint yet: starting it over from step 0.", file=sys.stderr)
            (run_dir / runfiles.METRICS).unlink(missing_ok=True)
        world.barrier()  # every rank has looked before rank 0 creates the directory
        created = runfiles.make_run_dir(run_dir) if world.is_main else None
        if world.is_main:
            runfiles.remove_stale_temporaries(run_dir)
        try:
            run = Run(config, run_dir, resume=(args.checkpoint or True) if resume else False, world=world)
        except BaseException:
            if created is not None:  # a run that failed while being assembled leaves nothing behind
                import shutil

                shutil.rmtree(created, ignore_errors=True)
            raise
        with interrupt.graceful_stop():
            summary = run.train()
        world.barrier()  # rank 0 may still write samples; a rank leaving the group early can abort in gloo's teardown
    finally:
        distributed.shutdown()
    if world.is_main:
        print(f"run finished: {run_dir} (step {summary['step']}, " + ", ".join(
            f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items() if k != "step") + ")")
    return 0


def cmd_data(args) -> int:
    """The data stages of a config alone, then their report. The tokenizer has to be trained somewhere: in
    ``--run-dir``, kept, or in a temporary folder removed at the end."""
    from hookformer.core import config as run_config

    config = run_config.validate(run_config.compose(args.config, args.overrides), _catalog(args))
    from hookformer.core import runfiles  # heavy imports (torch) once the config is valid

    keep = args.run_dir
    if keep is not None and runfiles.holds_files(keep):
        raise ConfigError(f"--run-dir {keep} already exists and is not empty; choose a new folder, or leave "
                          f"--run-dir out to work in a temporary one.")

    import json
    import shutil
    import tempfile

    import yaml

    from hookformer.core.assemble import Assembly  # heavy imports (torch, datasets) once the config is valid
    from hookformer.core.checkpoint import write_atomically
    from hookformer.core.report import format_report

    created = runfiles.make_run_dir(keep) if keep is not None else None
    with tempfile.TemporaryDirectory(prefix="hookformer-data-") as scratch:
        run_dir = keep or Path(scratch)
        try:
            assembly = Assembly(config, run_dir)
            assembly.prepare_data()
            report = assembly.data().report
        except BaseException:
            if created is not None:  # as with train: a failed start leaves nothing behind
                shutil.rmtree(created, ignore_errors=True)
            raise
    if keep is not None:
        write_atomically(keep / "config.yaml", yaml.safe_dump(config.dump(), sort_keys=False))
        write_atomically(keep / "data_report.json", json.dumps(report, indent=2))
    print(format_report(report, examples=args.examples))
    if keep is not None:
        print(f"kept in {keep}: config.yaml, data_report.json and the tokenizer's files")
    return 0


def cmd_evaluate(args) -> int:
    from hookformer.core import config as run_config

    raw = _saved_config(args.run_dir)
    for assignment in args.overrides:
        raw = run_config.apply_override(raw, assignment)
    config = _validate_saved(raw, args.run_dir, args, EVALUATE_SECTIONS)

    import json

    from hookformer.core import checkpoint
    from hookformer.core.evaluate import evaluate_checkpoint
    from hookformer.core.loop import resolve_device

    path = checkpoint.find(args.run_dir, args.checkpoint)
    results = evaluate_checkpoint(config, args.run_dir, path, split=args.split, max_examples=args.examples,
                                  device=resolve_device(config.train.device))
    print(f"{results['checkpoint']} (step {results['step']}), {results['split']} split, "
          f"{results['examples']:,} examples:")
    for key, value in results.items():
        if isinstance(value, float):
            print(f"  {key:<24} {value:.4f}")
    if args.output is not None:
        args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


def cmd_generate(args) -> int:
    config = _validate_saved(_saved_config(args.run_dir), args.run_dir, args, GENERATE_SECTIONS)
    texts = list(args.prompt)
    if args.prompts_file is not None:
        try:
            texts += args.prompts_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--prompts-file {args.prompts_file}: cannot read it as UTF-8 text ({exc})") from None

    from hookformer.core.generate import Decoding, encode_source, generate, is_encoder_decoder, load_trained

    decoding = Decoding.of({
        "max_new_tokens": args.max_new_tokens, "greedy": args.greedy, "temperature": args.temperature,
        "top_k": args.top_k or None, "top_p": args.top_p, "repetition_penalty": args.repetition_penalty,
        "num_beams": args.num_beams, "length_penalty": args.length_penalty, "stop_strings": args.stop,
        "seed": args.seed, "use_cache": not args.no_cache}, where="")
    tokenizer, model = load_trained(args.run_dir, config, checkpoint=args.checkpoint)
    if is_encoder_decoder(model):
        if texts or not args.source:
            raise ConfigError(f"{args.run_dir} holds an encoder-decoder: give the texts to encode with --source "
                              "(repeatable), not --prompt or --prompts-file; the decoder starts from bos")
        sources = [encode_source(tokenizer, text) for text in args.source]
        prompts, shown = [[tokenizer.special.bos]] * len(sources), [[] for _ in sources]
    else:
        if args.source:
            raise ConfigError(f"--source is the input of an encoder-decoder, and {args.run_dir} holds a decoder: "
                              "give the text to continue with --prompt")
        prompts = [tokenizer.encode(text) or [tokenizer.special.eos] for text in texts or [""]]
        sources, shown = None, prompts  # a decoder's output is printed after its prompt
    stream = _Stream(tokenizer, shown[0], args.stop) if len(prompts) == 1 and args.num_beams == 1 else None
    outputs = generate(model, prompts, decoding, tokenizer=tokenizer, sources=sources, on_token=stream)
    for i, (before, ids) in enumerate(zip(shown, outputs)):
        if stream is not None:
            stream.finish(ids)
        else:
            print((f"--- {i + 1} ---\n" if len(outputs) > 1 else "") + tokenizer.decode(before + ids))
    return 0


class _Stream:
    """Prints one continuation to the terminal as its tokens come. Text that may still become a stop string, or
    that ends in part of a character, waits until the next tokens settle it."""

    def __init__(self, tokenizer, before: list[int], stops: list[str]):
        self.tokenizer, self.before, self.ids, self.stops, self.printed = tokenizer, before, list(before), stops, ""

    def __call__(self, row: int, token: int) -> None:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids).rstrip("\ufffd")
        held = max((n for stop in self.stops for n in range(1, len(stop)) if text.endswith(stop[:n])), default=0)
        self._write(text[:len(text) - held])

    def finish(self, generated: list[int]) -> None:
        """Print the rest of the final text (the tokens before a stop string) and end the line."""
        self._write(self.tokenizer.decode(self.before + generated))
        print()

    def _write(self, text: str) -> None:
        if text.startswith(self.printed) and len(text) > len(self.printed):  # else a stop string took back text
            sys.stdout.write(text[len(self.printed):])
            sys.stdout.flush()
            self.printed = text


def cmd_import(args) -> int:
    from hookformer.core.interop import import_hf

    path = import_hf(args.hf_dir, args.run_dir, _catalog(args))
    print(f"imported {args.hf_dir} into {args.run_dir} (checkpoint {path.name}); fine-tune it with "
          f"`hookformer finetune {args.run_dir} CONFIG`")
    return 0


def cmd_export(args) -> int:
    config = _validate_saved(_saved_config(args.run_dir), args.run_dir, args, EXPORT_SECTIONS)

    from hookformer.core import checkpoint
    from hookformer.core.interop import export_hf

    for note in export_hf(config, args.run_dir, checkpoint.find(args.run_dir, args.checkpoint), args.out_dir):
        print(note)
    print(f"wrote {args.out_dir}")
    return 0


def _which_rank() -> str:
    """Under torchrun, an error names the rank that reports it."""
    size = os.environ.get("WORLD_SIZE", "1")
    return f" on rank {os.environ.get('RANK')} of {size}" if size != "1" else ""


def cmd_new_plugin(args) -> int:
    from hookformer.core.scaffold import scaffold

    root = scaffold(args.stage, args.name, args.dir, _catalog(args))
    print(f"wrote {root}: install it with `pip install -e {root}`, then test it with `python -m pytest {root}/tests`")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    handler = {"train": cmd_train, "finetune": cmd_finetune, "data": cmd_data, "evaluate": cmd_evaluate,
               "generate": cmd_generate, "new-plugin": cmd_new_plugin, "import": cmd_import,
               "export": cmd_export}.get(args.command) or {
        "list": cmd_plugins_list, "show": cmd_plugins_show}[args.plugins_command]
    try:
        return handler(args)
    except HookformerError as exc:
        if args.debug:
            raise
        print(f"hookformer: error{_which_rank()}: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except interrupt.Interrupted as exc:
        print(f"hookformer: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("hookformer: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`hookformer plugins list | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
