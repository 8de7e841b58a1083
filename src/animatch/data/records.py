"""Metadata -> records: how a job that reads a dataset (index, match, audit) gets its records, written once.

Raw metadata is read line by line (`schema.iter_metadata`: a bad line is a skipped {"line", "reason"},
never fatal); each record's appearance is cleaned and chunked as `prepare` does, and its id is prepare's
(`record_id`, a hash of the image path), so one image has one id in a prepared dir, an index and an audit.
A record that already carries prepared `appearance_chunks` keeps them. Prepared records are read from
`optimized_metadata.jsonl`. Match candidates (one per character and title, or free texts) are records too.
"""

from __future__ import annotations

import hashlib
import unicodedata
from pathlib import Path

from animatch.data.schema import iter_metadata
from animatch.data.text import appearance_chunks, clean_text
from animatch.errors import UserError

PREPARED_FILE = "optimized_metadata.jsonl"
NO_TEXT = "no appearance text after cleaning"


def title_key(title: str) -> str:
    """The form under which two spellings of a title are one title (splits, deduplication, audit)."""
    return " ".join(unicodedata.normalize("NFKC", title).casefold().split())


def record_id(file_name: str) -> str:
    return hashlib.sha1(file_name.encode("utf-8")).hexdigest()[:16]


def record_chunks(record: dict) -> list[str]:
    """A record's appearance chunks: the prepared ones, else cleaned and chunked from `appearance`."""
    chunks = [c for c in record.get("appearance_chunks") or [] if c.strip()]
    if chunks:
        return chunks
    return appearance_chunks(clean_text(record.get("appearance") or ""))


def read_metadata(path: str | Path) -> tuple[list[dict], list[dict]]:
    """(records, skipped lines as {"line", "reason"}) of a raw metadata JSONL.

    A record is its line's object with "id", the cleaned "appearance", its "appearance_chunks" (empty when no
    text is left: the caller decides whether that skips it), "_line" (its line number) and "_raw" (the object
    as read, for writing it back unchanged)."""
    records, skipped = [], []
    for line_no, record, reason in iter_metadata(path):
        if record is None:
            skipped.append({"line": line_no, "reason": reason})
            continue
        records.append({**record, "id": record_id(record["file_name"]),
                        "appearance": clean_text(record["appearance"]), "appearance_chunks": record_chunks(record),
                        "_line": line_no, "_raw": record})
    return records, skipped


def prepared_metadata(split_dir: str | Path) -> Path:
    """The file of all prepared records in an `animatch prepare --out` dir."""
    path = Path(split_dir) / PREPARED_FILE
    if not path.is_file():
        raise UserError(f"no {PREPARED_FILE} in {split_dir}: is it an `animatch prepare --out` directory?")
    return path


def metadata_candidates(path: str | Path) -> tuple[list[dict], list[list[str]], list[dict]]:
    """One match candidate per (character, title), its chunks pooled over all of its records.

    Returns (candidates, chunks per candidate, skipped records as {"line", "reason"})."""
    records, skipped = read_metadata(path)
    candidates: dict[tuple[str, str], dict] = {}
    chunks: dict[tuple[str, str], list[str]] = {}
    for record in records:
        if not record["appearance_chunks"]:
            skipped.append({"line": record["_line"], "reason": NO_TEXT})
            continue
        key = (str(record["character"]), str(record.get("title", "")))
        candidates.setdefault(key, {"candidate": key[0], "title": key[1], "file_names": []})
        candidates[key]["file_names"].append(str(record.get("file_name", "")))
        chunks.setdefault(key, [])
        chunks[key] += [t for t in record["appearance_chunks"] if t not in chunks[key]]
    skipped.sort(key=lambda s: s["line"])
    return list(candidates.values()), [chunks[k] for k in candidates], skipped


def text_candidates(path: str | Path) -> list[dict]:
    """One match candidate per non-blank line of a text file."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [{"candidate": line.strip(), "line": n} for n, line in enumerate(lines, 1) if line.strip()]


def candidate_label(candidate: dict) -> str:
    """"name (title)", or the name alone."""
    title = candidate.get("title")
    return f"{candidate['candidate']} ({title})" if title else candidate["candidate"]
