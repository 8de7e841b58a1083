"""The AniPersonaCaps record schema, streaming validation of metadata.jsonl, and reading prepared splits.

A raw record is one JSON object per line holding the six REQUIRED_FIELDS, all strings; extra fields are
kept. Every key must be present; `file_name`, `title`, `character` and `appearance` must also be non-blank,
while `personality` and `url` may be empty (or null, read as ""), because the real data has such records
(Angewomon has no personality, a hand-filled record has no url). `iter_metadata` never stops on a bad line:
it yields the line number and a reason of the form "category: detail" (malformed JSON, not a JSON object,
missing field, empty field, wrong type, not UTF-8) and goes on. Blank lines hold no record and are skipped.
`load_split` drops (and reports) prepared records whose file_name is unsafe, so no reader of a hand-edited
split opens a path outside the data root.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from animatch.errors import UserError

REQUIRED_FIELDS: tuple[str, ...] = ("file_name", "title", "character", "appearance", "personality", "url")
NON_EMPTY_FIELDS: tuple[str, ...] = ("file_name", "title", "character", "appearance")
OPTIONAL_TEXT_FIELDS: tuple[str, ...] = ("personality", "url")
SPLITS: tuple[str, ...] = ("train", "val", "test")


def validate_record(obj: object) -> str | None:
    """Why `obj` is not a valid raw record, or None. Nulls in the optional fields are fixed in place."""
    if not isinstance(obj, dict):
        return f"not a JSON object: got {_json_kind(obj)}"
    missing = [k for k in REQUIRED_FIELDS if k not in obj]
    if missing:
        return f"missing field: {', '.join(missing)}"
    for key in OPTIONAL_TEXT_FIELDS:
        if obj[key] is None:
            obj[key] = ""
    wrong = [f"{k} is {_json_kind(obj[k])}" for k in REQUIRED_FIELDS if not isinstance(obj[k], str)]
    if wrong:
        return f"wrong type: {', '.join(wrong)} (expected string)"
    empty = [k for k in NON_EMPTY_FIELDS if not obj[k].strip()]
    if empty:
        return f"empty field: {', '.join(empty)}"
    return None


def iter_metadata(path: str | os.PathLike) -> Iterator[tuple[int, dict | None, str | None]]:
    """(line number, record, None) for each valid line, (line number, None, reason) for each bad one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"metadata file not found: {path}")
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield line_no, None, f"not UTF-8: invalid byte 0x{raw[e.start]:02x} at byte {e.start + 1}"
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                yield line_no, None, f"malformed JSON: {e.msg} at column {e.colno}"
                continue
            except RecursionError:
                yield line_no, None, "malformed JSON: nested too deeply"
                continue
            reason = validate_record(obj)
            yield (line_no, None, reason) if reason else (line_no, obj, None)


def read_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """The objects of a JSONL file written by animatch (e.g. a prepared split); UserError on a bad line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"file not found: {path}")
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{line_no}: malformed JSON ({e.msg}); "
                                "re-run `animatch prepare`") from None
            if not isinstance(obj, dict):
                raise UserError(f"{path}:{line_no}: not a JSON object; re-run `animatch prepare`")
            yield obj


def load_split(split_dir: str | os.PathLike, split: str) -> list[dict]:
    """The prepared records of `split` ("train", "val" or "test") from a `animatch prepare --out` dir."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    path = Path(split_dir) / f"{split}.jsonl"
    if not path.is_file():
        raise UserError(f"no {split}.jsonl in {split_dir}: is it an `animatch prepare --out` directory?")
    return safe_records(read_jsonl(path), path)


def safe_records(records: Iterable[dict], source: str | os.PathLike) -> list[dict]:
    """The records whose file_name is safe as written (`safepath.name_problem`); the others (a hand-edited
    prepared file) are dropped and reported on stderr in one line."""
    from animatch.data.safepath import name_problem

    kept, dropped = [], []
    for n, record in enumerate(records, start=1):
        name = record.get("file_name")  # a record without one (text only) has nothing to open
        problem = None if name is None else name_problem(name) if isinstance(name, str) \
            else "unsafe file_name: not a string"
        (dropped if problem else kept).append((n, problem) if problem else record)
    if dropped:
        print(f"warning: {source}: dropped {len(dropped)} records with an unsafe file_name (record "
              f"{dropped[0][0]}: {dropped[0][1]})", file=sys.stderr)
    return kept


def _json_kind(value: object) -> str:
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "an integer",
             float: "a number", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)
