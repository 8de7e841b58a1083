"""The `animatch` command: one subcommand per job, each a thin parse -> config -> call.

Options are generated from the job's dataclass in `animatch.config`, so help texts and defaults live in
one place. A YAML `--config FILE` may set any field; explicit command-line options override it. User
mistakes (unknown option, missing path, bad value, `UserError` from a job) print one line and exit 2.
Job modules are imported lazily, so `animatch --help` answers without importing torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import re
import sys
import typing
from pathlib import Path
from typing import Any

import yaml

from animatch import config
from animatch.errors import UserError

# name -> (config class, "module:function", one-line help). The function takes the config and returns
# an exit code (None means 0).
COMMANDS: dict[str, tuple[type, str, str]] = {
    "demo": (config.DemoConfig, "animatch.demo:run_demo",
             "the whole pipeline on synthetic data, offline: data, CLIP, match, search, judge"),
    "synth": (config.SynthConfig, "animatch.data.synth:run_synth", "draw a synthetic persona dataset"),
    "prepare": (config.PrepareConfig, "animatch.data.prepare:run_prepare",
                "clean, validate, deduplicate, chunk and split a dataset"),
    "download": (config.DownloadConfig, "animatch.data.download:run_download",
                 "fetch AniPersonaCaps from the Hugging Face Hub"),
    "init-model": (config.InitModelConfig, "animatch.models.tiny:run_init_model",
                   "build a tiny offline checkpoint (clip-tiny, clip-small, llava-tiny, llava-minilm)"),
    "import-checkpoint": (config.ImportCheckpointConfig, "animatch.models.import_checkpoint:run_import_checkpoint",
                          "turn a PyTorch .pth CLIP state dict (the reference's best_model.pth) into a checkpoint dir"),
    "train": (config.TrainConfig, "animatch.clip.train:run_train", "fine-tune CLIP with global negatives"),
    "eval": (config.EvalConfig, "animatch.clip.evaluation:run_eval",
             "evaluate CLIP: accuracy, Recall@K, cosine gap, BLEU/ROUGE"),
    "match": (config.MatchConfig, "animatch.clip.match:run_match",
              "rank characters or texts for a folder of images; matches, heatmaps, summary"),
    "index": (config.IndexConfig, "animatch.clip.index:run_index", "build a search index of a dataset"),
    "search": (config.SearchConfig, "animatch.clip.index:run_search", "search an index by text or by image"),
    "judge": (config.JudgeConfig, "animatch.judge.cli:run_judge",
              "LLaVA judge: describe an image, then score an English text against it (1-10)"),
    "judge-train": (config.JudgeTrainConfig, "animatch.judge.train:run_judge_train",
                    "fine-tune the LLaVA judge (LoRA, QLoRA or full) on both stages"),
    "judge-eval": (config.JudgeEvalConfig, "animatch.judge.evaluation:run_judge_eval",
                   "evaluate the judge: verdict accuracy + ROC-AUC, keyword Recall@K, BLEU/ROUGE, cosine"),
    "audit": (config.AuditConfig, "animatch.audit.run:run_audit",
              "find mismatched image-text pairs: CLIP screen, LLaVA verification, clean metadata"),
    "serve": (config.ServeConfig, "animatch.serve.app:run_serve",
              "web app and JSON API: search, match and judge in the browser"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        # One line even when the offending argument holds a newline or other control characters.
        one_line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
        self.exit(2, f"{self.prog}: error: {one_line}\n")


def _group_of(cls: type, name: str) -> type:
    """The option group (or command class) that declares field `name` of `cls`."""
    return next(k for k in cls.__mro__ if name in vars(k).get("__annotations__", {}))


def _add_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """One argument per field: the command's own fields first, then one titled section per option group."""
    sections: dict[type, Any] = {cls: parser}
    rank = {k: n for n, k in enumerate(cls.__mro__)}  # own fields, then the groups, most specific first
    for f in sorted(dataclasses.fields(cls), key=lambda f: rank[_group_of(cls, f.name)]):
        group = _group_of(cls, f.name)
        if group not in sections:
            sections[group] = parser.add_argument_group(f"{group.__doc__} options")
        tp, is_list, _ = config.resolved_types(cls)[f.name]
        meta = f.metadata
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        choices = meta["choices"]
        help_text = meta["help"]
        if meta["required"]:
            help_text += " (required)"
        elif tp is bool:
            help_text += f" (default: {'on' if default else 'off'})"
        elif default is not None:  # an unset option's help says what unset means
            shown = " ".join(map(str, default)) if is_list else default
            help_text += f" (default: {shown})"
        kw: dict[str, Any] = {"help": help_text.replace("%", "%%"), "default": argparse.SUPPRESS}
        metavar = "{" + ",".join(choices) + "}" if choices else f.name.upper()
        if meta["positional"]:
            sections[group].add_argument(f.name, type=tp, metavar=metavar, nargs=None if meta["required"] else "?",
                                         **kw)
        elif tp is bool:
            sections[group].add_argument(config.flag(f), action=argparse.BooleanOptionalAction, **kw)
        else:
            sections[group].add_argument(config.flag(f), type=tp, metavar=metavar, nargs="+" if is_list else None,
                                         **kw)
    parser.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="YAML file setting any of these options; command-line options override it")


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.HelpFormatter(prog, max_help_position=16, width=110)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="animatch", description="Match anime characters with descriptions of their looks.",
                     formatter_class=_formatter)
    parser.add_argument("--version", action="version", version=f"animatch {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (cls, _, help_line) in COMMANDS.items():
        p = sub.add_parser(name, help=help_line, description=(cls.__doc__ or help_line).strip(),
                           formatter_class=_formatter)
        _add_options(p, cls)
        p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="also show the libraries' progress bars and warnings (hidden by default)")
    return parser


def _version() -> str:
    from animatch import __version__
    return __version__


class _ConfigLoader(yaml.SafeLoader):
    """YAML 1.1 reads `1e-5` (no dot) as a string; a learning rate written that way is a number here, as in
    YAML 1.2 and every other config reader users know."""


_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)$"),
    list("-+0123456789."))


def _read_config_file(path: Path, names: set[str]) -> dict[str, Any]:
    """The option: value mapping of a YAML `--config` file; UserError when it is not one."""
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=_ConfigLoader) or {}
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not UTF-8 text") from None
    except yaml.YAMLError as e:
        first_line = (str(e).splitlines() or [type(e).__name__])[0]
        raise UserError(f"config file {path} is not valid YAML: {first_line}") from None
    if not isinstance(loaded, dict):
        raise UserError(f"config file {path} must hold a mapping of option: value")
    unknown = sorted(map(str, set(loaded) - names))
    if unknown:
        raise UserError(f"config file {path}: unknown option(s) {', '.join(unknown)}")
    return loaded


def resolve_config(cls: type, given: dict[str, Any]) -> Any:
    """Defaults <- YAML config file <- command-line options; the options check their values, then the paths
    they name must exist."""
    values: dict[str, Any] = {}
    if "config" in given:
        given = dict(given)
        values.update(_read_config_file(Path(given.pop("config")), {f.name for f in dataclasses.fields(cls)}))
    values.update(given)
    cfg = cls(**values)
    missing = cfg.missing_path()
    if missing:
        raise UserError(missing)
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    command = args.pop("command", None)
    if command is None:
        parser.print_help()
        return 2
    cls, target, _ = COMMANDS[command]
    if not args.pop("verbose", False):
        from animatch.logs import quiet_libraries

        quiet_libraries()
    try:
        cfg = resolve_config(cls, args)
        module, func = target.split(":")
        code = getattr(importlib.import_module(module), func)(cfg)
    except UserError as e:
        print(f"animatch {command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"animatch {command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
