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
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from animatch import config as C
from animatch.errors import UserError

# name -> (config class, "module:function", one-line help). The function takes the config and returns
# an exit code (None means 0).
COMMANDS: dict[str, tuple[type, str, str]] = {
    "demo": (C.DemoConfig, "animatch.demo:run_demo",
             "the whole pipeline on synthetic data, offline: data, CLIP, match, search, judge"),
    "synth": (C.SynthConfig, "animatch.data.synth:run_synth", "draw a synthetic persona dataset"),
    "prepare": (C.PrepareConfig, "animatch.data.prepare:run_prepare",
                "clean, validate, deduplicate, chunk and split a dataset"),
    "download": (C.DownloadConfig, "animatch.data.download:run_download",
                 "fetch AniPersonaCaps from the Hugging Face Hub"),
    "init-model": (C.InitModelConfig, "animatch.models.tiny:run_init_model",
                   "build a tiny offline checkpoint (clip-tiny, clip-small, llava-tiny)"),
    "import-checkpoint": (C.ImportCheckpointConfig, "animatch.models.import_checkpoint:run_import_checkpoint",
                          "turn a PyTorch .pth CLIP state dict (the reference's best_model.pth) into a checkpoint dir"),
    "train": (C.TrainConfig, "animatch.clip.train:run_train", "fine-tune CLIP with global negatives"),
    "eval": (C.EvalConfig, "animatch.clip.evaluation:run_eval",
             "evaluate CLIP: accuracy, Recall@K, cosine gap, BLEU/ROUGE"),
    "match": (C.MatchConfig, "animatch.clip.match:run_match",
              "rank characters or texts for a folder of images; matches, heatmaps, summary"),
    "index": (C.IndexConfig, "animatch.clip.index:run_index", "build a search index of a dataset"),
    "search": (C.SearchConfig, "animatch.clip.index:run_search", "search an index by text or by image"),
    "judge": (C.JudgeConfig, "animatch.judge.cli:run_judge",
              "LLaVA judge: describe an image, then score an English text against it (1-10)"),
    "judge-train": (C.JudgeTrainConfig, "animatch.judge.train:run_judge_train",
                    "fine-tune the LLaVA judge (LoRA, QLoRA or full) on both stages"),
    "judge-eval": (C.JudgeEvalConfig, "animatch.judge.evaluation:run_judge_eval",
                   "evaluate the judge: verdict accuracy + ROC-AUC, keyword Recall@K, BLEU/ROUGE, cosine"),
    "audit": (C.AuditConfig, "animatch.audit.run:run_audit",
              "find mismatched image-text pairs: CLIP screen, LLaVA verification, clean metadata"),
    "serve": (C.ServeConfig, "animatch.serve.app:run_serve",
              "web app and JSON API: search, match and judge in the browser"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _field_type(tp: Any) -> tuple[type, bool]:
    """(scalar type, is_list) of a dataclass field annotation (Optional[...] unwrapped)."""
    if isinstance(tp, str):
        tp = eval(tp, vars(C), dict(vars(typing)))  # annotations are strings under `from __future__`
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
        origin = typing.get_origin(tp)
    if origin is list:
        return typing.get_args(tp)[0], True
    return tp, False


def _add_options(parser: argparse.ArgumentParser, cls: type) -> None:
    for f in dataclasses.fields(cls):
        meta = f.metadata
        tp, is_list = _field_type(f.type)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = meta.get("help", "")
        if meta.get("required"):
            help_text += " (required)"
        elif tp is not bool:
            help_text += f" (default: {default})"
        kw: dict[str, Any] = {"help": help_text.replace("%", "%%"), "default": argparse.SUPPRESS}
        if meta.get("positional"):
            if not meta.get("required"):
                kw["nargs"] = "?"
            parser.add_argument(f.name, type=tp, choices=meta.get("choices"), metavar=f.name.upper(), **kw)
            continue
        flag = "--" + f.name.replace("_", "-")
        if tp is bool:
            kw["help"] = help_text + f" (default: {'on' if default else 'off'})"
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        else:
            parser.add_argument(flag, type=tp, choices=meta.get("choices"), nargs="+" if is_list else None,
                                metavar=f.name.upper(), **kw)
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


def resolve_config(cls: type, given: dict[str, Any]) -> Any:
    """Defaults <- YAML config file <- command-line options; then check required fields and paths."""
    values: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    if "config" in given:
        path = Path(given.pop("config"))
        if not path.is_file():
            raise UserError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise UserError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(loaded, dict):
            raise UserError(f"config file {path} must hold a mapping of option: value")
        unknown = sorted(set(loaded) - names)
        if unknown:
            raise UserError(f"config file {path}: unknown option(s) {', '.join(unknown)}")
        values.update(loaded)
    values.update(given)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        flag = f.name if meta.get("positional") else "--" + f.name.replace("_", "-")
        if meta.get("required") and values.get(f.name) is None:
            raise UserError(f"{flag} is required")
        value = values.get(f.name)
        if value is not None and meta.get("choices") and value not in meta["choices"]:
            raise UserError(f"{flag}: {value!r} is not one of {', '.join(map(str, meta['choices']))}")
        kind = meta.get("exists")
        if value is not None and kind:
            ok = {"dir": os.path.isdir, "file": os.path.isfile, "path": os.path.exists}[kind](value)
            if not ok:
                raise UserError(f"{flag}: {kind} not found: {value}")
    return cls(**values)


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
