"""Run directories, the output policy and atomic file writes.

Every job writes into an output directory: its resolved config (`config.yaml`), its metrics as JSON and a
short human report. All writes here are atomic (temp file + `os.replace`, temp dir + rename for
directories), so a kill never leaves a half-written file where a reader expects a whole one.

`claim_output` is the one output policy, called by every job that writes before it does any work: a new
or empty `--out`, or one the same command wrote before (its marker file says so), is used; anything else
is refused with one line unless `--overwrite`; and an output never is, or holds, an input of the same run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from animatch.config import flag
from animatch.errors import UserError

OUTPUT_MARKER = ".animatch.json"


def _umask_mode(mode: int) -> int:
    """`mode` less the process umask (mkstemp/mkdtemp create 0600/0700 whatever the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode(0o666))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


@contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp dir beside `final`; on success it replaces `final` in one rename.

    The old directory is moved aside first and deleted only after the new one is in place, so at any
    instant `final` is either the complete old or the complete new directory (or, for a split second
    between two renames, absent, never partial).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp.", dir=final.parent))
    os.chmod(tmp, _umask_mode(0o777))
    try:
        yield tmp
        marker = final / OUTPUT_MARKER
        if marker.is_file() and not (tmp / OUTPUT_MARKER).exists():  # the new dir stays claimed
            shutil.copyfile(marker, tmp / OUTPUT_MARKER)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=final.parent))
        os.rmdir(old)
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _marker_command(marker: Path) -> str | None:
    """The command recorded in an output marker file, or None (no marker, or not one of ours)."""
    try:
        if not marker.is_file() or marker.stat().st_size > 4096:
            return None
        return json.loads(marker.read_text(encoding="utf-8")).get("command")
    except (OSError, ValueError, AttributeError):
        return None


def _input_paths(cfg: Any) -> list[tuple[str, Path]]:
    """(flag, resolved path) of every input path of `cfg`: the fields the CLI checks for existence."""
    return [(flag(f), Path(getattr(cfg, f.name)).expanduser().resolve()) for f in dataclasses.fields(cfg)
            if f.metadata.get("exists") and getattr(cfg, f.name)]


def _first_foreign_entry(folder: Path) -> str | None:
    """The name of an entry of `folder` other than our marker (and its temp files), or None."""
    with os.scandir(folder) as entries:
        return next((e.name for e in entries if OUTPUT_MARKER not in e.name), None)


def claim_output(cfg: Any, command: str, *, file: bool = False, replace: bool = False) -> Path:
    """Apply the output policy to `cfg.out` and mark it as `command`'s; returns it. Call before any work.

    `cfg.out` is a directory, or with `file=True` a result file (its marker lies beside it). It is used when
    it is new or empty, or when its marker names `command`; otherwise only with `cfg.overwrite`. It may never
    be an input of `cfg` (a field checked for existence) nor, for a directory, hold one. `replace=True`
    empties the directory (the job rewrites it whole). UserError (one line) when refused or not creatable.
    """
    out = Path(cfg.out).expanduser()
    target = out.resolve()
    for option, path in _input_paths(cfg):
        if target == path or (not file and path.is_relative_to(target)):
            what = "is" if target == path else "holds"
            raise UserError(f"--out {out} {what} the input {option} {path}: a result never replaces an input; "
                            "choose another --out")
    if file:
        if out.is_dir():
            raise UserError(f"--out {out} is a directory; give the results file, e.g. {out / 'results.jsonl'}")
        marker = out.parent / f".{out.name}{OUTPUT_MARKER}"
        if out.exists() and not out.is_file():
            raise UserError(f"--out {out} exists and is not a regular file")
        foreign = out.name if out.exists() and out.stat().st_size > 0 else None
    else:
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} exists and is not a directory")
        marker = out / OUTPUT_MARKER
        foreign = _first_foreign_entry(out) if out.is_dir() else None
    owner = _marker_command(marker)
    if foreign is not None and owner != command and not getattr(cfg, "overwrite", False):
        whose = (f"was written by `animatch {owner}`" if owner else "exists and was not written by animatch"
                 if file else f"holds {foreign!r}, not written by animatch")
        raise UserError(f"--out {out} {whose}; refusing to overwrite it: choose a new or empty --out, "
                        "or pass --overwrite")
    try:
        (out.parent if file else out).mkdir(parents=True, exist_ok=True)
        if replace and not file:
            for entry in out.iterdir():
                if entry.name != OUTPUT_MARKER:
                    shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        if owner != command:
            atomic_write_text(marker, json.dumps({"command": command}) + "\n")
    except OSError as e:
        raise UserError(f"cannot write --out {out}: {e.strerror or e}") from None
    return out


def config_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)


def write_run_files(out: str | os.PathLike, cfg: Any = None, metrics: dict | None = None,
                    report: str | None = None, metrics_name: str = "metrics.json",
                    report_name: str = "report.md") -> None:
    """Write the resolved config, metrics and report of a run (whichever are given)."""
    out = Path(out)
    if cfg is not None:
        atomic_write_text(out / "config.yaml", yaml.safe_dump(config_dict(cfg), sort_keys=False))
    if metrics is not None:
        write_json(out / metrics_name, metrics)
    if report is not None:
        atomic_write_text(out / report_name, report.rstrip() + "\n")


def markdown_table(rows: list[dict], columns: list[str] | None = None, floatfmt: str = ".4f") -> str:
    """Rows of dicts as a GitHub markdown table; floats formatted with `floatfmt`."""
    if not rows:
        return ""
    columns = columns or list(rows[0])

    def fmt(v: Any) -> str:
        return format(v, floatfmt) if isinstance(v, float) else ("" if v is None else str(v))

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
