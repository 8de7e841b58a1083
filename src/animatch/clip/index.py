"""`animatch index` and `animatch search`: a faiss search index over a dataset's images and descriptions.

An index dir holds `images.faiss` (one vector per readable image) and `texts.faiss` (one chunk-pooled
appearance vector per record), both keyed by the record's row in `records.jsonl` (id, character, title,
file_name, appearance), plus `index.json` (model, data root, counts, unreadable images), `config.yaml`
and `report.md`. Indexes are exact inner product (`IndexFlatIP`) up to `approximate_above` vectors and
HNSW above, where exact search gets slow. The dir is written atomically (temp dir + rename). Records
come from a prepared dir (`--split-dir`, optionally one `--split`) or, without one, from
DATA/metadata.jsonl cleaned and chunked on the fly. `SearchIndex` opens an index for queries without
torch; a text query runs on the NumPy text tower (`animatch.models.text_tower`) when `animatch index` has
checked it against the full model (`clip.search_index`), so answering one takes well under a second. Image
queries, and the
Python API, go through `animatch.clip.matcher.Matcher`.
"""

from __future__ import annotations

import json
from pathlib import Path

import faiss

from animatch.clip.search_index import SearchIndex, build_faiss, read_manifest, text_tower_agrees
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
    from animatch.data.safepath import paths_inside
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
    inside, failures = paths_inside(root, [r["file_name"] for r in records])  # the others are never opened
    image_emb, ok, failed = embed_images(model, processor, [p for _, p in inside], batch_size=cfg.batch_size,
                                         workers=cfg.workers, cache=cache)
    ok, failures = [inside[i][0] for i in ok], failures + failed
    text_emb = embed_chunked(model, processor, [chunks[n] for n in with_text], batch_size=cfg.batch_size,
                             cache=cache, progress=True)
    model_ref = _model_reference(cfg.model)
    tower_checked = text_tower_agrees(model_ref, model, processor, [c[0] for c in chunks if c])
    image_index = build_faiss(image_emb, ok, approximate_above=cfg.approximate_above, neighbors=cfg.hnsw_neighbors)
    text_index = build_faiss(text_emb, with_text, approximate_above=cfg.approximate_above,
                             neighbors=cfg.hnsw_neighbors)
    manifest = {
        "model": model_ref, "numpy_text_tower": tower_checked, "data": str(root.resolve()),
        "dim": int(image_emb.shape[1]),
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
    if (cfg.query is None) == (cfg.image is None):
        raise UserError("give a text QUERY or --image PATH (exactly one)")
    manifest, tower = read_manifest(cfg.index), None
    if cfg.query is not None and manifest.get("numpy_text_tower"):
        from animatch.models.text_tower import NumpyTextTower

        tower = NumpyTextTower.load(manifest["model"])
    if tower is not None:  # no torch: the NumPy text tower, checked against this model when the index was built
        index = SearchIndex(cfg.index)
        index.check_dim(tower.projection_dim)
        results = index.image_hits(tower.embed(cfg.query), cfg.k)
    else:
        from animatch.clip.matcher import Matcher

        matcher = Matcher.from_index(cfg.index, device=cfg.device)
        results = matcher.search_text(cfg.query, k=cfg.k) if cfg.query is not None else \
            matcher.search_image(cfg.image, k=cfg.k)
    columns = ["rank", "score", "character", "title", "image" if cfg.query is not None else "appearance"]
    if cfg.json:
        print(json.dumps(results, ensure_ascii=False, indent=2))
    else:
        for r in results:
            print("  ".join(f"{r[c]:.4f}" if c == "score" else str(r[c]) for c in columns))
    return 0
