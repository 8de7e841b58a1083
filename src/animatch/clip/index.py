"""`animatch index` and `animatch search`: a faiss search index over a dataset's images and descriptions.

An index dir holds `images.faiss` (one vector per readable image) and `texts.faiss` (one chunk-pooled
appearance vector per record), both keyed by the record's row in `records.jsonl` (id, character, title,
file_name, appearance), plus `index.json` (model, data root, counts, unreadable images), `config.yaml`
and `report.md`. Indexes are exact inner product (`IndexFlatIP`) up to `approximate_above` vectors and
HNSW above, where exact search gets slow. The dir is written atomically (temp dir + rename). Records
come from a prepared dir (`--split-dir`, optionally one `--split`) or, without one, from
DATA/metadata.jsonl cleaned and chunked on the fly. `SearchIndex` opens an index for queries without
torch; a text query runs on the NumPy text tower (`animatch.models.text_tower`) when `animatch index` has
checked it against the full model, so answering one takes well under a second. Image queries, and the
Python API, go through `animatch.clip.matcher.Matcher`.
"""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np

from animatch.config import IndexConfig, SearchConfig
from animatch.errors import UserError
from animatch.runs import atomic_dir, atomic_write_text, markdown_table, write_json, write_run_files

RECORD_FIELDS = ("id", "character", "title", "file_name", "appearance")
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 256
# Fetch this many times k hits before deduplicating by character, so k distinct characters remain.
OVERSAMPLE = 4
# The NumPy text tower answers text queries when its embeddings of these many indexed texts (and a short
# query) agree with the full model's to this cosine (float32 agrees to ~1e-7; a GPU's autocast less).
TOWER_CHECK_TEXTS, TOWER_CHECK_COSINE = 16, 0.999


def build_faiss(vectors, ids: list[int], *, approximate_above: int, neighbors: int = 32):
    """An inner-product index of L2-normalised `vectors` (a [N, D] tensor) with the given ids: exact, or HNSW
    when large."""
    dim = int(vectors.shape[1])
    if len(ids) > approximate_above:
        inner = faiss.IndexHNSWFlat(dim, neighbors, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        inner.hnsw.efSearch = HNSW_EF_SEARCH  # saved with the index
    else:
        inner = faiss.IndexFlatIP(dim)
    index = faiss.IndexIDMap(inner)
    if ids:
        index.add_with_ids(np.ascontiguousarray(vectors.numpy(), dtype=np.float32), np.asarray(ids, dtype=np.int64))
    return index


def _load_records(cfg: IndexConfig) -> tuple[list[dict], list[dict]]:
    """(records to index, skipped {"line", "reason"}) from the prepared dir or the raw metadata."""
    from animatch.data.schema import iter_metadata, load_split, read_jsonl

    if cfg.split_dir:
        if cfg.split:
            return load_split(cfg.split_dir, cfg.split), []
        path = Path(cfg.split_dir) / "optimized_metadata.jsonl"
        if not path.is_file():
            raise UserError(f"--split-dir: {path} not found (run `animatch prepare` first)")
        return list(read_jsonl(path)), []
    if cfg.split:
        raise UserError("--split needs --split-dir")
    from animatch.data.prepare import record_id
    from animatch.data.text import appearance_chunks, clean_text

    path = Path(cfg.data) / "metadata.jsonl"
    if not path.is_file():
        raise UserError(f"--data: {path} not found")
    records, skipped = [], []
    for line_no, record, error in iter_metadata(path):
        if record is None:
            skipped.append({"line": line_no, "reason": error})
            continue
        record["appearance"] = clean_text(record.get("appearance") or "")
        record["appearance_chunks"] = appearance_chunks(record["appearance"]) if record["appearance"] else []
        record.setdefault("id", record_id(str(record["file_name"])))
        records.append(record)
    return records, skipped


def _model_reference(model: str) -> str:
    """A local model dir as an absolute path (so the index works from any cwd); a hub id unchanged."""
    return str(Path(model).resolve()) if Path(model).is_dir() else model


def run_index(cfg: IndexConfig) -> int:
    from animatch.clip.cache import EmbeddingCache
    from animatch.clip.embed import embed_chunked, embed_images
    from animatch.clip.match import record_chunks
    from animatch.models.hub import load_clip

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
    paths = [root / r["file_name"] for r in records]
    image_emb, ok, failures = embed_images(model, processor, paths, batch_size=cfg.batch_size,
                                           workers=cfg.workers, cache=cache)
    text_emb = embed_chunked(model, processor, [chunks[n] for n in with_text], cache=cache,
                             progress=True)
    model_ref = _model_reference(cfg.model)
    tower_checked = _text_tower_agrees(model_ref, model, processor, [c[0] for c in chunks if c])
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


def _text_tower_agrees(model_ref: str, model, processor, texts: list[str]) -> bool:
    """Whether the NumPy text tower gives this model's text embeddings (same tokens, cosine >= the bar)."""
    from animatch.clip.embed import embed_texts
    from animatch.models.text_tower import NumpyTextTower

    tower = NumpyTextTower.load(model_ref)
    if tower is None:
        return False
    probe = ["pink hair", *texts[:TOWER_CHECK_TEXTS]]
    max_length = int(model.config.text_config.max_position_embeddings)
    if any(processor.tokenizer(t, truncation=True, max_length=max_length)["input_ids"] != tower.token_ids(t)
           for t in probe):
        return False
    full = embed_texts(model, processor, probe).float().cpu().numpy()
    fast = np.concatenate([tower.embed(t) for t in probe])
    return bool((full * fast).sum(1).min() >= TOWER_CHECK_COSINE)


class SearchIndex:
    """An index dir opened for queries: manifest, records and both faiss indexes (NumPy and faiss only)."""

    def __init__(self, index_dir: str | Path):
        self.dir = Path(index_dir)
        self.manifest = read_manifest(index_dir)
        with open(self.dir / "records.jsonl", encoding="utf-8") as f:
            self.records = [json.loads(line) for line in f]
        self.image_index = faiss.read_index(str(self.dir / "images.faiss"))
        self.text_index = faiss.read_index(str(self.dir / "texts.faiss"))
        for index in (self.image_index, self.text_index):
            inner = faiss.downcast_index(index.index)
            if isinstance(inner, faiss.IndexHNSWFlat):  # indexes written before the depth was stored in them
                inner.hnsw.efSearch = max(inner.hnsw.efSearch, HNSW_EF_SEARCH)

    def check_dim(self, dim: int) -> None:
        if self.manifest["dim"] != dim:
            raise UserError(f"index {self.dir} holds {self.manifest['dim']}-d vectors, the model gives {dim}-d")

    def _search(self, index, query: np.ndarray, k: int) -> list[tuple[float, dict]]:
        """The best k hits, one per character (its best score), for a [1, D] float32 query."""
        if index.ntotal == 0 or k <= 0:
            return []
        scores, ids = index.search(np.ascontiguousarray(query, dtype=np.float32), min(index.ntotal, k * OVERSAMPLE))
        hits, seen = [], set()
        for score, i in zip(scores[0].tolist(), ids[0].tolist()):
            if i < 0:  # faiss pads with -1 when it finds fewer hits
                break
            record = self.records[i]
            who = (record.get("character"), record.get("title"))
            if who in seen:
                continue
            seen.add(who)
            hits.append((score, record))
            if len(hits) == k:
                break
        return hits

    def image_hits(self, query: np.ndarray, k: int) -> list[dict]:
        """Characters whose images best match a text embedding: rank, score, character, title, image, id."""
        root = Path(self.manifest["data"])
        return [{"rank": n, "score": round(s, 6), "character": r.get("character"), "title": r.get("title"),
                 "image": str(root / r["file_name"]), "id": r.get("id")}
                for n, (s, r) in enumerate(self._search(self.image_index, query, k), 1)]

    def text_hits(self, query: np.ndarray, k: int) -> list[dict]:
        """Characters whose descriptions best match an image embedding: rank, score, character, title,
        appearance, id."""
        return [{"rank": n, "score": round(s, 6), "character": r.get("character"), "title": r.get("title"),
                 "appearance": r.get("appearance"), "id": r.get("id")}
                for n, (s, r) in enumerate(self._search(self.text_index, query, k), 1)]


def read_manifest(index_dir: str | Path) -> dict:
    path = Path(index_dir) / "index.json"
    if not path.is_file():
        raise UserError(f"{index_dir} is not an index dir (no index.json); build one with `animatch index`")
    return json.loads(path.read_text())


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
