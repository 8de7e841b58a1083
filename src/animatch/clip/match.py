"""`animatch match`: rank candidate characters (or free texts) for every image in a folder, the job only.

Candidates come from `data.records` (one per character and title of a metadata file, its chunks pooled,
or free texts), images are embedded across the processes of `accelerate launch` (`clip.embed`) and scored
by `clip.matcher`. This module owns what the run shows and writes: which candidate is each image's true one
(by file name or character name), `matches.jsonl`, `matches.csv`, heatmaps, `summary.json`, `report.md`,
and the printed table of the first images' best matches. The main process writes one output, the same as a
single-process run's.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

from animatch.config import MatchConfig
from animatch.data.records import candidate_label, metadata_candidates, text_candidates
from animatch.errors import UserError
from animatch.runs import atomic_write_text, claim_output, markdown_table, write_run_files

SHOWN = 20  # images in the printed and reported tables; every image is in matches.csv / matches.jsonl


def _name_key(name: str) -> str:
    return " ".join(name.replace("_", " ").split()).casefold()


def true_candidates(files: list[Path], candidates: list[dict]) -> list[int | None]:
    """Per image, the index of its true candidate when the metadata tells: a record's file_name has the image's
    file name, or the image is named after a character (`Frieren.png`, `doma_chira.png`: underscores as
    spaces, any case) that only one candidate has. None when neither tells (and always for free texts)."""
    by_file = {Path(f).name: n for n, c in enumerate(candidates) for f in c.get("file_names", []) if f}
    named: dict[str, list[int]] = {}
    for n, c in enumerate(candidates):
        if "file_names" in c:
            named.setdefault(_name_key(c["candidate"]), []).append(n)
    by_name = {name: ns[0] for name, ns in named.items() if len(ns) == 1}
    return [by_file.get(f.name, by_name.get(_name_key(f.stem))) for f in files]


def run_match(cfg: MatchConfig) -> int:
    from animatch.clip.embed import embed_chunked, embed_sharded, embed_texts, open_sharded_clip
    from animatch.clip.heatmap import write_heatmaps
    from animatch.clip.matcher import score, top_matches
    from animatch.data.images import list_image_files
    from animatch.data.safepath import paths_inside

    if (cfg.metadata is None) == (cfg.texts is None):
        raise UserError("give exactly one of --metadata or --texts")
    claim_output(cfg, "match")
    folder = Path(cfg.images)
    # A symlink out of the folder, or a name the OS cannot take, is listed with its reason and never opened.
    inside, unsafe = paths_inside(folder, [p.relative_to(folder).as_posix() for p in list_image_files(folder)])
    paths = [path for _, path in inside]
    if not paths:
        raise UserError(f"no image files under {folder}")
    if cfg.metadata:
        candidates, chunks, skipped = metadata_candidates(cfg.metadata)
    else:
        candidates, chunks, skipped = text_candidates(cfg.texts), [], []
    if not candidates:
        raise UserError(f"no usable candidates in {cfg.metadata or cfg.texts}")

    started = time.perf_counter()
    state, model, processor, cache = open_sharded_clip(cfg)
    emb, ok_indices, failures, stats = embed_sharded(model, processor, paths, cache, state,
                                                     batch_size=cfg.batch_size, workers=cfg.workers)
    if not state.is_main_process:
        return 0
    if chunks:
        text_emb = embed_chunked(model, processor, chunks, batch_size=cfg.batch_size, cache=cache)
    else:
        text_emb = embed_texts(model, processor, [c["candidate"] for c in candidates], batch_size=cfg.batch_size,
                               cache=cache)
    if cache is not None:
        stats["texts_embedded"], stats["texts_cached"] = cache.stats.texts_embedded, cache.stats.texts_cached
    logit_scale = float(model.logit_scale.detach().exp())
    cosine, prob = score(emb, text_emb, logit_scale)
    ranked = top_matches(cosine, prob, candidates, cfg.top_k)

    out = Path(cfg.out)
    names = [paths[i].relative_to(folder).as_posix() for i in ok_indices]
    columns = ["image", "rank", "candidate", "title" if cfg.metadata else "line", "cosine", "probability"]
    truth = true_candidates([paths[i] for i in ok_indices], candidates)
    _write_matches(out, names, ranked, candidates, truth, columns)
    best = cosine.argmax(dim=1).tolist() if names else []
    known = sum(t is not None for t in truth)
    correct = sum(t == b for t, b in zip(truth, best) if t is not None)
    heatmaps = write_heatmaps(cosine.numpy(), names, [candidate_label(c) for c in candidates], out, truth=truth,
                              rows_per_page=cfg.heatmap_rows, max_cols=cfg.heatmap_cols) if names else []
    failed = [{"image": Path(p).relative_to(folder).as_posix(), "reason": r} for p, r in unsafe + failures]
    summary = {
        "images_found": len(paths) + len(unsafe), "images_matched": len(names), "images_failed": len(failed),
        "failures": failed, "candidates": len(candidates), "candidate_source": "metadata" if cfg.metadata else "texts",
        "records_skipped": skipped, "top_k": cfg.top_k, "logit_scale": round(logit_scale, 4),
        "top1_accuracy": round(correct / known, 4) if known else None, "images_with_known_character": known,
        "mean_top1_probability": round(sum(m[0]["probability"] for m in ranked) / len(ranked), 4) if ranked else None,
        "cache": stats, "processes": state.num_processes, "seconds": round(time.perf_counter() - started, 2),
        "heatmaps": [p.name for p in heatmaps],
    }
    expected = [candidate_label(candidates[t]) if t is not None else None for t in truth]
    write_run_files(out, cfg, summary, _report(summary, names, ranked, expected), metrics_name="summary.json")
    print(f"matched {len(names)}/{len(paths)} images against {len(candidates)} candidates -> {out}")
    if not names:
        raise UserError(f"none of the {len(paths)} images could be read; reasons in {out / 'summary.json'}")
    print(best_match_table(names, ranked, candidates, truth))
    if known:
        print(f"top-1 accuracy on the {known} images whose character is known: {correct}/{known} "
              f"({correct / known:.0%})")
    return 0


def _write_matches(out: Path, names: list[str], ranked: list[list[dict]], candidates: list[dict],
                   truth: list[int | None], columns: list[str]) -> None:
    """Write matches.jsonl (with each image's expected candidate when known) and matches.csv."""
    lines, rows = [], []
    for name, matches, true in zip(names, ranked, truth):
        record: dict[str, Any] = {"image": name}
        if true is not None:
            record["expected"] = candidate_label(candidates[true])
        record["matches"] = matches
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        rows += [{"image": name, **m} for m in matches]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "matches.jsonl", "".join(lines))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "matches.csv", buf.getvalue())


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def best_match_table(names: list[str], ranked: list[list[dict]], candidates: list[dict], truth: list[int | None],
                     shown: int = SHOWN) -> str:
    """The first `shown` images as a plain-text table: file, best match, cosine and, where the image's character
    is known, whether the best match is it; a last line says where the rest is."""
    rows = []
    for name, matches, true in zip(names[:shown], ranked, truth):
        row = [_cut(name, 32), _cut(candidate_label(matches[0]), 44), f"{matches[0]['cosine']:.3f}"]
        if true is not None:
            right = (matches[0]["candidate"], matches[0].get("title")) == \
                (candidates[true]["candidate"], candidates[true].get("title"))
            row.append("yes" if right else "no: " + _cut(candidate_label(candidates[true]), 36))
        rows.append(row)
    header = ["image", "best match", "cosine"] + (["true?"] if any(t is not None for t in truth) else [])
    widths = [max(len(r[i]) if i < len(r) else 0 for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) if i == 2 else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             .rstrip() for r in [header, *rows]]
    if len(names) > shown:
        lines.append(f"... {len(names) - shown} more images: every image's top matches are in matches.csv")
    return "\n".join(lines)


def _report(summary: dict, names: list[str], ranked: list[list[dict]], expected: list[str | None],
            shown: int = SHOWN) -> str:
    lines = ["# animatch match", "",
             (f"{summary['images_matched']} of {summary['images_found']} images matched against "
              f"{summary['candidates']} candidates ({summary['candidate_source']}); "
              f"{summary['images_failed']} unreadable.")]
    if summary["top1_accuracy"] is not None:
        lines.append(f"Top-1 accuracy on the {summary['images_with_known_character']} images whose character the "
                     f"metadata names (by file name or character name): {summary['top1_accuracy']:.2%}.")
    c = summary["cache"]
    cache = (f"{c['images_embedded']} images embedded, {c['images_cached']} from the cache; {c['texts_embedded']} "
             f"texts embedded, {c['texts_cached']} from the cache" if c else "off")
    lines += ["", f"Embedding cache: {cache}. Heatmaps: {', '.join(summary['heatmaps']) or 'none'}.", ""]
    if ranked:
        rows = [{"image": n, "best": candidate_label(m[0]), "cosine": m[0]["cosine"],
                 "probability": m[0]["probability"]} for n, m in zip(names[:shown], ranked[:shown])]
        if any(expected):
            for row, true in zip(rows, expected):
                row["true character"] = "" if true is None else "yes" if true == row["best"] else true
        lines += [f"## Best match (first {min(shown, len(names))} images)", "", markdown_table(rows), ""]
    if summary["failures"]:
        lines += ["## Unreadable images", "", markdown_table(summary["failures"]), ""]
    return "\n".join(lines)
