"""Run directories and atomic file writes.

Every job writes into an output directory: its resolved config (`config.yaml`), its metrics as JSON and a
short human report. All writes here are atomic (temp file + `os.replace`, temp dir + rename for
directories), so a kill never leaves a half-written file where a reader expects a whole one.
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
