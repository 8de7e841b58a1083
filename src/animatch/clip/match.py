"""`animatch match`: rank candidate characters (or free texts) for every image in a folder.

Candidates are one per character of a metadata file (its appearance text, chunk-pooled as in training
and evaluation) or free texts, one per line. Each image gets its top-k candidates with cosine and softmax
probability at the model's logit scale; the run prints the first images' best matches (right or wrong where
the metadata names the image's character) and writes `matches.jsonl`, `matches.csv`, heatmaps, `summary.json`,
`report.md` and `config.yaml`. Unreadable images are listed with their reason. Under
`accelerate launch` the images are sharded across processes and gathered, and the main process writes
one output, the same as a single-process run's.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from animatch.config import MatchConfig
from animatch.errors import UserError
from animatch.runs import atomic_write_text, claim_output, markdown_table, write_run_files

DECIMALS = 6
SHOWN = 20  # images in the printed and reported tables; every image is in matches.csv / matches.jsonl


def record_chunks(record: dict) -> list[str]:
    """A record's appearance chunks: the prepared ones, else cleaned and chunked from `appearance`."""
    chunks = [c for c in record.get("appearance_chunks") or [] if c.strip()]
    if chunks:
        return chunks
    from animatch.data.text import appearance_chunks, clean_text

    return appearance_chunks(clean_text(record.get("appearance") or ""))


def metadata_candidates(path: str | Path) -> tuple[list[dict], list[list[str]], list[dict]]:
    """One candidate per (character, title), its chunks pooled over all of its records.

    Returns (candidates, chunks per candidate, skipped records as {"line", "reason"})."""
    from animatch.data.schema import iter_metadata

    candidates: dict[tuple[str, str], dict] = {}
    chunks: dict[tuple[str, str], list[str]] = {}
    skipped = []
    for line_no, record, error in iter_metadata(path):
        texts = record_chunks(record) if record is not None else []
        if record is None or not texts:
            skipped.append({"line": line_no, "reason": error or "no appearance text"})
            continue
        key = (str(record["character"]), str(record.get("title", "")))
        candidates.setdefault(key, {"candidate": key[0], "title": key[1], "file_names": []})
        candidates[key]["file_names"].append(str(record.get("file_name", "")))
        chunks.setdefault(key, [])
        chunks[key] += [t for t in texts if t not in chunks[key]]
    return list(candidates.values()), [chunks[k] for k in candidates], skipped


def text_candidates(path: str | Path) -> list[dict]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [{"candidate": line.strip(), "line": n} for n, line in enumerate(lines, 1) if line.strip()]


def candidate_label(candidate: dict) -> str:
    title = candidate.get("title")
    return f"{candidate['candidate']} ({title})" if title else candidate["candidate"]


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


def score(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(cosine [N_img, N_txt], softmax over the candidates of logit_scale * cosine)."""
    cosine = image_emb.float() @ text_emb.float().T
    return cosine, torch.softmax(logit_scale * cosine, dim=1)


def top_matches(cosine: torch.Tensor, prob: torch.Tensor, candidates: list[dict], top_k: int) -> list[list[dict]]:
    """Per image, its top_k candidates (rank, candidate fields, cosine, probability), best first."""
    k = min(top_k, cosine.shape[1])
    order = torch.argsort(cosine, dim=1, descending=True, stable=True)[:, :k]
    result = []
    for row, cols in enumerate(order.tolist()):
        result.append([{"rank": r + 1, **{f: v for f, v in candidates[c].items() if f != "file_names"},
                        "cosine": round(float(cosine[row, c]), DECIMALS),
                        "probability": round(float(prob[row, c]), DECIMALS)} for r, c in enumerate(cols)])
    return result


def embed_sharded(cfg: MatchConfig, model: Any, processor: Any, paths: list[Path], cache: Any, state: Any):
    """Embed this process's share of `paths`; gather every share (global indices) on all processes."""
    from accelerate.utils import gather_object

    from animatch.clip.embed import embed_images

    with state.split_between_processes(list(range(len(paths)))) as shard:
        emb, ok, failures = embed_images(model, processor, [paths[i] for i in shard], batch_size=cfg.batch_size,
                                         workers=cfg.workers, cache=cache, progress=state.is_local_main_process)
        part = {"indices": [shard[i] for i in ok], "embeddings": emb, "failures": failures,
                "stats": asdict(cache.stats) if cache is not None else {}}
    parts = gather_object([part]) if state.num_processes > 1 else [part]
    rows = {i: e for p in parts for i, e in zip(p["indices"], p["embeddings"])}
    ok_indices = sorted(rows)
    emb = torch.stack([rows[i] for i in ok_indices]) if rows else torch.empty(0, model.config.projection_dim)
    failures = sorted(f for p in parts for f in p["failures"])
    stats: dict[str, int] = {}
    for p in parts:
        for name, n in p["stats"].items():
            stats[name] = stats.get(name, 0) + n
    return emb, ok_indices, failures, stats


def open_sharded_clip(cfg: Any) -> tuple[Any, Any, Any, Any]:
    """(process state, model, processor, embedding cache or None) for a job that shards images across the
    processes of `accelerate launch`; `cfg` has model, device, cache and cache_dir."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    from animatch.clip.cache import EmbeddingCache
    from animatch.models.hub import load_clip

    # Without cpu=True, accelerate ignores a CPU multi-process launch (ACCELERATE_USE_CPU) and runs N copies.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
                         or str(cfg.device).startswith("cpu"))
    model, processor = load_clip(cfg.model, device=cfg.device or state.device)
    cache = EmbeddingCache(Path(cfg.cache_dir).expanduser(), model, processor) if cfg.cache else None
    return state, model, processor, cache


def run_match(cfg: MatchConfig) -> int:
    from animatch.clip.embed import embed_chunked, embed_texts
    from animatch.clip.heatmap import write_heatmaps
    from animatch.data.images import list_image_files
    from animatch.data.safepath import UnsafePath, path_inside

    if (cfg.metadata is None) == (cfg.texts is None):
        raise UserError("give exactly one of --metadata or --texts")
    claim_output(cfg, "match")
    folder = Path(cfg.images)
    paths, unsafe = [], []
    for path in list_image_files(folder):
        try:
            paths.append(path_inside(folder, path.relative_to(folder).as_posix()))
        except UnsafePath as e:  # never opened: a symlink out of the folder, or a name the OS cannot take
            unsafe.append((str(path), e.reason))
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
    emb, ok_indices, failures, stats = embed_sharded(cfg, model, processor, paths, cache, state)
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
