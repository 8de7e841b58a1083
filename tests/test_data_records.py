"""The one metadata -> records loader: what index, match and audit read from a raw metadata file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from animatch.audit.records import load_records
from animatch.clip.index import _load_records
from animatch.config import AuditConfig, IndexConfig
from animatch.data.records import (
    NO_TEXT,
    candidate_label,
    metadata_candidates,
    prepared_metadata,
    read_metadata,
    record_id,
    text_candidates,
)
from animatch.data.text import appearance_chunks, clean_text
from animatch.errors import UserError

RAW = [
    {"file_name": "a/1.png", "character": "Aki", "title": "Blue Sky", "appearance": "Aki has  short red hair.\n",
     "personality": None, "url": ""},
    "not a record",
    {"file_name": "a/2.png", "character": "Aki", "title": "Blue Sky", "appearance": "She wears a green coat.",
     "personality": "", "url": "", "id": "own-id"},
    {"file_name": "b/1.png", "character": "Bo", "title": "Tea", "appearance": "[citation needed]", "personality": "",
     "url": ""},
    {"file_name": "c/1.png", "character": "Cy", "title": "Tea", "appearance": "ignored when chunks are given",
     "appearance_chunks": ["prepared chunk"], "personality": "", "url": ""},
]


def _write_root(root: Path) -> Path:
    root.mkdir()
    lines = [json.dumps(r) for r in RAW]
    (root / "metadata.jsonl").write_text("\n".join(lines[:1] + ["{broken"] + lines[1:]) + "\n")
    for r in RAW:
        if isinstance(r, dict):
            (root / r["file_name"]).parent.mkdir(exist_ok=True)
            (root / r["file_name"]).write_bytes(b"png")
    return root


def test_raw_records_are_cleaned_chunked_and_keyed_as_prepare_keys_them(tmp_path):
    records, skipped = read_metadata(_write_root(tmp_path / "root") / "metadata.jsonl")
    assert [s["line"] for s in skipped] == [2, 3]  # malformed JSON, not an object: counted, never fatal
    assert [r["_line"] for r in records] == [1, 4, 5, 6]
    first, second, empty, prepared = records
    assert first["appearance"] == clean_text(RAW[0]["appearance"])
    assert first["appearance_chunks"] == appearance_chunks(first["appearance"])
    assert second["id"] == record_id("a/2.png")  # the image path's id everywhere, never a field of the input
    assert empty["appearance_chunks"] == []
    assert prepared["appearance_chunks"] == ["prepared chunk"]
    assert first["_raw"] == {**RAW[0], "personality": ""}  # as read (schema turns a null into "")


def test_index_and_audit_read_the_same_records(tmp_path):
    root = _write_root(tmp_path / "root")
    indexed, _ = _load_records(IndexConfig(data=str(root), model="m", out=str(tmp_path / "index")))
    audited, skipped, _ = load_records(AuditConfig(data=str(root), model="m", out=str(tmp_path / "audit")))
    assert [(r["id"], r["appearance_chunks"]) for r in audited] == \
        [(r["id"], r["appearance_chunks"]) for r in indexed if r["appearance_chunks"]]
    assert {"line": 5, "reason": NO_TEXT} in skipped


def test_match_candidates_pool_a_characters_records(tmp_path):
    candidates, chunks, skipped = metadata_candidates(_write_root(tmp_path / "root") / "metadata.jsonl")
    assert [candidate_label(c) for c in candidates] == ["Aki (Blue Sky)", "Cy (Tea)"]
    assert candidates[0]["file_names"] == ["a/1.png", "a/2.png"] and len(chunks[0]) == 2
    assert [s["line"] for s in skipped] == [2, 3, 5] and skipped[-1]["reason"] == NO_TEXT


def test_text_candidates_and_the_prepared_file(tmp_path):
    (tmp_path / "texts.txt").write_text("red hair\n\n  blue eyes  \n")
    assert text_candidates(tmp_path / "texts.txt") == [{"candidate": "red hair", "line": 1},
                                                        {"candidate": "blue eyes", "line": 3}]
    with pytest.raises(UserError, match="animatch prepare --out"):
        prepared_metadata(tmp_path)
