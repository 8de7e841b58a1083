"""`animatch index` and `animatch search`: a faiss search index over a dataset's images and descriptions.

An index dir holds `images.faiss` (one vector per readable image) and `texts.faiss` (one chunk-pooled
appearance vector per record), both keyed by the record's row in `records.jsonl` (id, character, title,
file_name, appearance), plus `index.json` (model, data root, counts, unreadable images), `config.yaml`
and `report.md`. Indexes are exact inner product (`IndexFlatIP`) up to `approximate_above` vectors and
HNSW above, where exact search gets slow. The dir is written atomically (temp dir + rename). Records
come from a prepared dir (`--split-dir`, optionally one `--split`) or, without one, from
DATA/metadata.jsonl cleaned and chunked on the fly. Querying lives in `animatch.clip.matcher.Matcher`.
"""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import torch

from animatch.config import IndexConfig, SearchConfig
from animatch.errors import UserError
from animatch.runs import (
    atomic_dir,
    atomic_write_text,
    claim_output,
    markdown_table,
    write_json,
    write_run_files,
)

RECORD_FIELDS = ("id", "character", "title", "file_name", "appearance")
HNSW_EF_CONSTRUCTION = 80


def build_faiss(vectors: torch.Tensor, ids: list[int], *, approximate_above: int, neighbors: int = 32):
    """An inner-product index of L2-normalised `vectors` with the given ids: exact, or HNSW when large."""
    dim = int(vectors.shape[1])
    if len(ids) > approximate_above:
        inner = faiss.IndexHNSWFlat(dim, neighbors, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    else:
        inner = faiss.IndexFlatIP(dim)
    index = faiss.IndexIDMap(inner)
    if ids:
        index.add_with_ids(np.ascontiguousarray(vectors.numpy(), dtype=np.float32), np.asarray(ids, dtype=np.int64))
    return index


def _load_records(cfg: IndexConfig) -> tuple[list[dict], list[dict]]:
    """(records to index, skipped {"line", "reason"}) from the prepared dir or the raw metadata."""
    from animatch.data.records import prepared_metadata, read_metadata
    from animatch.data.schema import load_split, read_jsonl, safe_records

    if cfg.split_dir:
        if cfg.split:
            return load_split(cfg.split_dir, cfg.split), []
        path = prepared_metadata(cfg.split_dir)
        return safe_records(read_jsonl(path), path), []
    if cfg.split:
        raise UserError("--split needs --split-dir")
    path = Path(cfg.data) / "metadata.jsonl"
    if not path.is_file():
        raise UserError(f"--data: {path} not found")
    return read_metadata(path)


def _model_reference(model: str) -> str:
    """A local model dir as an absolute path (so the index works from any cwd); a hub id unchanged."""
    return str(Path(model).resolve()) if Path(model).is_dir() else model


def run_index(cfg: IndexConfig) -> int:
    from animatch.clip.cache import EmbeddingCache
    from animatch.clip.embed import embed_chunked, embed_images
    from animatch.data.records import record_chunks
    from animatch.data.safepath import UnsafePath, path_inside
    from animatch.models.hub import load_clip

    claim_output(cfg, "index")
    records, skipped = _load_records(cfg)
    chunks = [record_chunks(r) for r in records]
    with_text = [n for n, c in enumerate(chunks) if c]
    skipped += [{"line": None, "id": records[n].get("id"), "reason": "no appearance text"}
                for n in sorted(set(range(len(records))) - set(with_text))]
    if not records:
        raise UserError("no records to index")
    model, processor = load_clip(cfg.model, device=cfg.device)
    cache = EmbeddingCache(Path(cfg.cache_dir).expanduser(), model, processor) if cfg.cache else None
    root = Path(cfg.data)
    inside, failures = [], []
    for n, r in enumerate(records):
        try:
            inside.append((n, path_inside(root, str(r["file_name"]))))
        except UnsafePath as e:  # never opened: outside the data root, or not a regular file
            failures.append((str(root / str(r["file_name"])), e.reason))
    image_emb, ok, failed = embed_images(model, processor, [p for _, p in inside], batch_size=cfg.batch_size,
                                         workers=cfg.workers, cache=cache)
    ok, failures = [inside[i][0] for i in ok], failures + failed
    text_emb = embed_chunked(model, processor, [chunks[n] for n in with_text], batch_size=cfg.batch_size,
                             cache=cache, progress=True)
    image_index = build_faiss(image_emb, ok, approximate_above=cfg.approximate_above, neighbors=cfg.hnsw_neighbors)
    text_index = build_faiss(text_emb, with_text, approximate_above=cfg.approximate_above,
                             neighbors=cfg.hnsw_neighbors)
    manifest = {
        "model": _model_reference(cfg.model), "data": str(root.resolve()), "dim": int(image_emb.shape[1]),
        "records": len(records), "images_indexed": len(ok), "texts_indexed": len(with_text),
        "image_index": type(faiss.downcast_index(image_index.index)).__name__,
        "text_index": type(faiss.downcast_index(text_index.index)).__name__,
        "unreadable_images": [{"path": p, "reason": r} for p, r in failures], "skipped_records": skipped,
        "cache": vars(cache.stats) if cache is not None else None,
    }
    with atomic_dir(cfg.out) as tmp:
        faiss.write_index(image_index, str(tmp / "images.faiss"))
        faiss.write_index(text_index, str(tmp / "texts.faiss"))
        atomic_write_text(tmp / "records.jsonl", "".join(
            json.dumps({f: r.get(f) for f in RECORD_FIELDS}, ensure_ascii=False) + "\n" for r in records))
        write_json(tmp / "index.json", manifest)
        write_run_files(tmp, cfg, report=_index_report(manifest))
    print(f"indexed {len(ok)} images and {len(with_text)} descriptions of {len(records)} records -> {cfg.out}")
    return 0


def _index_report(m: dict) -> str:
    lines = ["# animatch index", "", f"Model: `{m['model']}`; data: `{m['data']}`.", "",
             markdown_table([{"records": m["records"], "images indexed": m["images_indexed"],
                              "descriptions indexed": m["texts_indexed"], "image index": m["image_index"],
                              "text index": m["text_index"]}]), ""]
    if m["unreadable_images"]:
        lines += ["## Unreadable images", "", markdown_table(m["unreadable_images"]), ""]
    if m["skipped_records"]:
        lines += [f"{len(m['skipped_records'])} records skipped (reasons in index.json).", ""]
    return "\n".join(lines)


def run_search(cfg: SearchConfig) -> int:
    from animatch.clip.matcher import Matcher

    if (cfg.query is None) == (cfg.image is None):
        raise UserError("give a text QUERY or --image PATH (exactly one)")
    matcher = Matcher.from_index(cfg.index, device=cfg.device)
    if cfg.query is not None:
        results = matcher.search_text(cfg.query, k=cfg.k)
        columns = ["rank", "score", "character", "title", "image"]
    else:
        results = matcher.search_image(cfg.image, k=cfg.k)
        columns = ["rank", "score", "character", "title", "appearance"]
    if cfg.json:
        print(json.dumps(results, ensure_ascii=False, indent=2))
    else:
        for r in results:
            print("  ".join(f"{r[c]:.4f}" if c == "score" else str(r[c]) for c in columns))
    return 0
