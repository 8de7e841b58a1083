"""A search index opened for queries, and the pieces `animatch index` builds one from: faiss indexes
(exact inner product, or HNSW above a size, its search depth saved in the index) and the check that lets a text
query run on the NumPy text tower. Needs NumPy and faiss only, never torch, so a text query answers fast;
`animatch.clip.matcher.Matcher` (the Python API) and the `search` and `serve` commands read indexes through it.
"""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np

from animatch.errors import UserError

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


def text_tower_agrees(model_ref: str, model, processor, texts: list[str]) -> bool:
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
