"""`animatch prepare`: raw AniPersonaCaps root -> validated, cleaned, deduplicated, chunked, split records.

Every record passes these checks in order and is dropped, with its line number and reason counted in
prepare_report.json, at the first it fails: schema (schema.iter_metadata) -> text (appearance too short,
not an appearance (text.non_appearance_reason), unsafe (safepath.name_problem: control characters,
absolute, `..`) or duplicate file_name) -> image (kept inside the root by safepath.path_inside: no symlink
out of it, no device, FIFO or socket; read once with a size cap, hashed and fully decoded by
images.load_image_bytes, in a process pool) -> placeholder image (the same bytes shared by
>= placeholder_min_characters records spanning at least two titles: all dropped; a share within one title
is variants of one character) -> duplicate image (same bytes; first line kept) -> duplicate
appearance (same cleaned text, case-insensitive; first line kept). Splits are drawn per title from a salted
hash of the normalised title (no title on two sides; a title keeps its split when other titles come or
go); with >= 3 titles val and test are never left empty. Outputs are sorted and carry no timestamps, so a
re-run on the same input writes byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

from animatch.config import PrepareConfig
from animatch.data.images import ImageLoadError, load_image_bytes
from animatch.data.records import record_id, title_key
from animatch.data.safepath import CONTROL_CHARACTERS, UnsafePath, name_problem, path_inside, read_bounded
from animatch.data.schema import SPLITS, iter_metadata
from animatch.data.text import (
    appearance_chunks,
    clean_text,
    estimate_clip_tokens,
    non_appearance_reason,
    tokenizer_token_counter,
)
from animatch.errors import UserError
from animatch.runs import atomic_write_text, claim_output, markdown_table, write_run_files

MAX_EXAMPLES = 20
OUTPUT_FILES = ("optimized_metadata.jsonl", "train.jsonl", "val.jsonl", "test.jsonl")


class DropLog:
    """Drop counts per reason category (the text before ':'), with the first MAX_EXAMPLES of each."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = defaultdict(list)

    def add(self, line_no: int, reason: str, file_name: str | None = None) -> None:
        category = reason.split(":")[0]
        self.counts[category] += 1
        if len(self.examples[category]) < MAX_EXAMPLES:
            shown = ascii(file_name) if file_name and CONTROL_CHARACTERS.search(file_name) else file_name
            where = f"line {line_no}" + (f" ({shown})" if file_name else "")
            self.examples[category].append(f"{where}: {reason}")

    def as_dict(self) -> dict:
        return {k: {"count": self.counts[k], "examples": self.examples[k]} for k in sorted(self.counts)}


def assign_splits(title_keys: set[str], val_fraction: float, test_fraction: float,
                  seed: int) -> dict[str, str]:
    """title key -> split, from a salted hash; with >= 3 titles, val and test get at least one title each."""
    def unit(key: str) -> float:
        return int.from_bytes(hashlib.sha256(f"{seed}\x1f{key}".encode()).digest()[:8], "big") / 2**64

    ranked = sorted(title_keys, key=lambda k: (unit(k), k))
    split = {k: "val" if unit(k) < val_fraction else "test" if unit(k) < val_fraction + test_fraction
             else "train" for k in ranked}
    if len(ranked) >= 3:
        for name, fraction in (("val", val_fraction), ("test", test_fraction)):
            train = [k for k in ranked if split[k] == "train"]
            if fraction > 0 and name not in split.values() and len(train) >= 2:
                split[train[0]] = name  # the train title whose hash lies closest to the split's range
    return split


def _check_image(task: tuple[str, str, int, bool]) -> tuple[str | None, str | None]:
    """(hash of the file bytes, None) or (None, reason); runs in a worker process."""
    root, name, max_pixels, decode = task
    try:
        path = path_inside(root, name)
        data = read_bounded(path)
    except UnsafePath as e:
        return None, e.reason
    except FileNotFoundError:
        return None, "missing file"
    except OSError as e:
        return None, f"unreadable file: {e.strerror or e}"
    if not data:
        return None, "zero-byte file"
    if decode:
        try:
            load_image_bytes(data, path, max_pixels)
        except ImageLoadError as e:
            return None, e.reason
    return hashlib.blake2b(data, digest_size=16).hexdigest(), None


def _check_images(tasks: list[tuple[str, str, int, bool]],
                  workers: int) -> Iterator[tuple[str | None, str | None]]:
    """Results of `_check_image` in task order, yielded as they come (the caller works meanwhile)."""
    with tqdm(total=len(tasks), desc="checking images", unit="img", dynamic_ncols=True) as bar:
        if workers <= 1 or len(tasks) < 32:
            for result in map(_check_image, tasks):
                bar.update()
                yield result
            return
        chunksize = max(1, min(64, len(tasks) // (workers * 8)))
        pool = ProcessPoolExecutor(max_workers=workers)
        try:
            for result in pool.map(_check_image, tasks, chunksize=chunksize):
                bar.update()
                yield result
        finally:  # on Ctrl-C, drop the queued chunks instead of decoding them all first
            pool.shutdown(wait=True, cancel_futures=True)


def _validate_config(cfg: PrepareConfig) -> Path:
    data = Path(cfg.data)
    if not data.is_dir():
        raise UserError(f"--data: dataset root not found: {data}")
    metadata = data / cfg.metadata
    if not metadata.is_file():
        raise UserError(f"no {cfg.metadata} in {data}: not an AniPersonaCaps dataset root")
    claim_output(cfg, "prepare")
    return metadata


def _text_stage(metadata: Path, cfg: PrepareConfig, drops: DropLog) -> tuple[int, list[tuple[int, dict]]]:
    """Records that pass the schema and text checks, as (line number, cleaned record)."""
    read, kept, seen_files = 0, [], {}
    for line_no, rec, reason in iter_metadata(metadata):
        read += 1
        if rec is None:
            drops.add(line_no, reason)
            continue
        rec = {**rec, "file_name": rec["file_name"].strip(), "title": " ".join(rec["title"].split()),
               "character": " ".join(rec["character"].split()), "url": rec["url"].strip(),
               "appearance": clean_text(rec["appearance"]), "personality": clean_text(rec["personality"])}
        name = rec["file_name"]
        if len(rec["appearance"]) < max(cfg.min_appearance_chars, 1):
            reason = f"appearance too short: {len(rec['appearance'])} characters after cleaning"
        elif (why := non_appearance_reason(rec["appearance"])) is not None:
            reason = why
        elif (why := name_problem(name)) is not None:
            reason = why
        elif name in seen_files:
            reason = f"duplicate file_name: same image path as line {seen_files[name]}"
        else:
            seen_files[name] = line_no
            kept.append((line_no, rec))
            continue
        drops.add(line_no, reason, name)
    return read, kept


def _dedup_stage(records: list[tuple[int, dict, str]], cfg: PrepareConfig,
                 drops: DropLog) -> list[tuple[int, dict]]:
    """Drop placeholder images, then duplicate images, then duplicate appearances (first line kept)."""
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, (_, _, digest) in enumerate(records):
        by_hash[digest].append(i)
    reasons: dict[int, str] = {}
    for members in by_hash.values():
        if len(members) < 2:
            continue
        titles = {title_key(records[i][1]["title"]) for i in members}
        if len(members) >= cfg.placeholder_min_characters and len(titles) >= 2:
            for i in members:
                reasons[i] = (f"placeholder image: the same image as {len(members) - 1} other records "
                              f"of {len(titles)} titles")
        else:
            for i in members[1:]:
                reasons[i] = f"duplicate image: same bytes as line {records[members[0]][0]}"
    kept, seen_text = [], {}
    for i, (line_no, rec, _) in enumerate(records):
        text = " ".join(rec["appearance"].casefold().split())
        if i not in reasons and text in seen_text:
            reasons[i] = f"duplicate appearance: same text as line {seen_text[text]}"
        if i in reasons:
            drops.add(line_no, reasons[i], rec["file_name"])
            continue
        seen_text[text] = line_no
        kept.append((line_no, rec))
    return kept


def run_prepare(cfg: PrepareConfig) -> int:
    """Write the prepared dir `cfg.out` (see the module doc); UserError for bad input or nothing kept."""
    metadata = _validate_config(cfg)
    data, out = Path(cfg.data), Path(cfg.out)
    count_tokens = tokenizer_token_counter(cfg.tokenizer) if cfg.tokenizer else estimate_clip_tokens
    drops = DropLog()
    read, candidates = _text_stage(metadata, cfg, drops)
    if read == 0:
        raise UserError(f"{metadata} holds no records")
    tasks = [(str(data), rec["file_name"], cfg.max_image_pixels, cfg.check_images) for _, rec in candidates]
    with_images = []
    for (line_no, rec), (digest, reason) in zip(candidates, _check_images(tasks, cfg.workers), strict=True):
        if reason is None:  # chunking here overlaps with the workers' decoding
            rec["appearance_chunks"] = appearance_chunks(rec["appearance"], cfg.chunk_tokens, count_tokens)
            with_images.append((line_no, rec, digest))
        else:
            drops.add(line_no, reason, rec["file_name"])
    kept = _dedup_stage(with_images, cfg, drops)

    splits = assign_splits({title_key(r["title"]) for _, r in kept}, cfg.val_fraction, cfg.test_fraction,
                           cfg.split_seed)
    records = [{**rec, "id": record_id(rec["file_name"]), "split": splits[title_key(rec["title"])]}
               for _, rec in kept]
    records.sort(key=lambda r: (title_key(r["title"]), r["character"].casefold(), r["file_name"]))
    report = _report(cfg, metadata, read, records, drops, len(tasks))
    _write_outputs(out, cfg, records, report)
    print(f"{report['summary']} Wrote {out}.")
    if not records:
        raise UserError(f"no record survived the checks; see {out / 'prepare_report.md'}")
    return 0


def _report(cfg: PrepareConfig, metadata: Path, read: int, records: list[dict], drops: DropLog,
            images_checked: int) -> dict:
    split_rows = {s: {"records": sum(r["split"] == s for r in records),
                      "titles": len({title_key(r["title"]) for r in records if r["split"] == s})}
                  for s in SPLITS}
    n_titles = sum(v["titles"] for v in split_rows.values())
    chunk_counts = [len(r["appearance_chunks"]) for r in records]
    n_chunks = sum(chunk_counts)
    drop_text = ", ".join(f"{n} {k}" for k, n in sorted(drops.counts.items(), key=lambda kv: (-kv[1], kv[0])))
    summary = (f"prepare: read {read} records from {metadata}; kept {len(records)} "
               f"(train {split_rows['train']['records']} / val {split_rows['val']['records']} / "
               f"test {split_rows['test']['records']} records over "
               f"{n_titles} titles), dropped {sum(drops.counts.values())}"
               + (f" ({drop_text})" if drop_text else "") + f"; {images_checked} images checked; "
               f"{n_chunks} appearance chunks ({n_chunks / max(len(records), 1):.2f} per record, "
               f"<= {cfg.chunk_tokens} tokens by {cfg.tokenizer or 'the conservative estimate'}).")
    return {"summary": summary, "metadata": str(metadata), "records_read": read, "kept": len(records),
            "dropped": sum(drops.counts.values()), "drops": drops.as_dict(), "splits": split_rows,
            "images_checked": images_checked,
            "appearance_chunks": {"total": n_chunks, "max_tokens": cfg.chunk_tokens,
                                  "per_record_max": max(chunk_counts, default=0),
                                  "token_counter": cfg.tokenizer or "estimate_clip_tokens"}}


def _write_outputs(out: Path, cfg: PrepareConfig, records: list[dict], report: dict) -> None:
    def jsonl(rows: list[dict]) -> str:
        return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)

    atomic_write_text(out / "optimized_metadata.jsonl", jsonl(records))
    for split in SPLITS:
        atomic_write_text(out / f"{split}.jsonl", jsonl([r for r in records if r["split"] == split]))
    drop_rows = [{"reason": k, "count": v["count"], "first example": v["examples"][0]}
                 for k, v in report["drops"].items()]
    split_rows = [{"split": s, **v} for s, v in report["splits"].items()]
    md = (f"# prepare report\n\n{report['summary']}\n\n## Splits\n\n{markdown_table(split_rows)}\n\n"
          f"## Dropped records\n\n{markdown_table(drop_rows) or 'none'}\n\n"
          "Each dropped record is counted once, under the first check it failed, in this order: schema, "
          "text (too short, not an appearance, unsafe or duplicate file_name), image, placeholder image, "
          "duplicate image, duplicate appearance; so a record dropped for its text never had its image read. "
          f"Up to {MAX_EXAMPLES} examples per reason are in prepare_report.json.\n")
    write_run_files(out, cfg, report, md, metrics_name="prepare_report.json", report_name="prepare_report.md")
