"""The audit's input and clean output: which records are audited, their sentences, trimmed texts.

With `--split-dir` the prepared records are audited, otherwise DATA/--metadata as `data.records` reads it;
a record without text, or whose image path leaves DATA or is not a regular file (`safepath.path_inside`),
is skipped with its reason. Sentences are found paragraph by paragraph, so a trimmed text keeps its
paragraphs; what goes into clean_metadata.jsonl is the input record as it was, or with its appearance
trimmed (and re-chunked for a prepared record).
"""

from __future__ import annotations

from pathlib import Path

from animatch.config import AuditConfig
from animatch.data.records import NO_TEXT, prepared_metadata, read_metadata
from animatch.data.safepath import path_problem
from animatch.data.schema import read_jsonl
from animatch.data.text import appearance_chunks, split_sentences


def load_records(cfg: AuditConfig) -> tuple[list[dict], list[dict], str]:
    """(records to audit, skipped input lines as {"line", "reason"}, a description of the source).

    Every returned record has "id", a cleaned "appearance" and non-empty "appearance_chunks"."""
    if cfg.split_dir:
        path = prepared_metadata(cfg.split_dir)
        records, skipped = [], []
        for n, record in enumerate(read_jsonl(path), start=1):
            reason = None if record.get("appearance_chunks") and isinstance(record.get("file_name"), str) \
                else "no appearance chunks or no file_name"
            if (reason := reason or path_problem(cfg.data, record["file_name"])) is not None:
                skipped.append({"line": n, "reason": reason})
                continue
            records.append(record)
        return records, skipped, str(path)
    path = Path(cfg.data) / cfg.metadata
    records = []
    read, skipped = read_metadata(path)
    for record in read:
        reason = path_problem(cfg.data, record["file_name"]) if record["appearance_chunks"] else NO_TEXT
        if reason is not None:
            skipped.append({"line": record["_line"], "reason": reason})
            continue
        records.append(record)
    skipped.sort(key=lambda s: s["line"])
    return records, skipped, str(path)


def sentences_of(text: str) -> list[tuple[int, str]]:
    """(paragraph index, sentence) of every sentence of a cleaned text."""
    return [(p, s) for p, paragraph in enumerate(text.split("\n")) for s in split_sentences(paragraph)]


def trimmed_text(sentences: list[tuple[int, str]], drop: set[int]) -> str:
    """The text rebuilt from its sentences less those at positions `drop` (empty paragraphs vanish)."""
    paragraphs: dict[int, list[str]] = {}
    for k, (p, s) in enumerate(sentences):
        if k not in drop:
            paragraphs.setdefault(p, []).append(s)
    return "\n".join(" ".join(parts) for _, parts in sorted(paragraphs.items()))


def clean_record(record: dict, trimmed: str | None) -> dict:
    """The record as written to clean_metadata.jsonl: unchanged, or with its appearance trimmed."""
    raw = record.get("_raw")
    out = dict(raw if raw is not None else record)
    if trimmed is not None:
        out["appearance"] = trimmed
        if raw is None:
            out["appearance_chunks"] = appearance_chunks(trimmed)
    return out
