"""The approximate (HNSW) index `animatch index` builds above its threshold keeps the answers of exact search."""

from __future__ import annotations

import faiss
import numpy as np
import torch

from animatch.clip.search_index import HNSW_EF_SEARCH, SearchIndex, build_faiss
from animatch.config import IndexConfig


def _clustered(n: int, dim: int = 128, clusters: int = 500, spread: float = 2.0, seed: int = 0) -> np.ndarray:
    """Unit vectors around random centres, as embeddings of characters that share looks; wide enough that
    within a cluster the neighbours are hard to tell apart (faiss's default search depth finds ~60% of them)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = centres[rng.integers(0, clusters, n)] + spread / np.sqrt(dim) * rng.standard_normal((n, dim))
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    faiss.normalize_L2(vectors)
    return vectors


def _recall_at_10(index, exact, queries: np.ndarray) -> float:
    truth, found = exact.search(queries, 10)[1], index.search(queries, 10)[1]
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, found)]))


def test_shipped_hnsw_settings_keep_recall_at_10_above_095(tmp_path):
    faiss.omp_set_num_threads(1)
    data = _clustered(10_300)
    queries, vectors = data[:300], torch.from_numpy(data[300:])
    ids = list(range(len(vectors)))
    exact = build_faiss(vectors, ids, approximate_above=len(ids))
    approximate = build_faiss(vectors, ids, approximate_above=0, neighbors=IndexConfig.hnsw_neighbors)
    inner = faiss.downcast_index(approximate.index)
    assert isinstance(inner, faiss.IndexHNSWFlat) and inner.hnsw.efSearch == HNSW_EF_SEARCH
    assert _recall_at_10(approximate, exact, queries) >= 0.95
    # the depth is stored in the file, so an index read back searches as deep
    faiss.write_index(approximate, str(tmp_path / "images.faiss"))
    assert faiss.downcast_index(faiss.read_index(str(tmp_path / "images.faiss")).index).hnsw.efSearch == \
        HNSW_EF_SEARCH
    inner.hnsw.efSearch = 16  # faiss's default depth loses answers on the same data
    assert _recall_at_10(approximate, exact, queries) < 0.9


def test_search_index_reads_old_shallow_indexes_at_the_shipped_depth(synth_index_dir, tmp_path):
    import shutil

    copy = shutil.copytree(synth_index_dir, tmp_path / "index")
    vectors = torch.from_numpy(_clustered(64, dim=128))
    shallow = build_faiss(vectors, list(range(64)), approximate_above=0)
    faiss.downcast_index(shallow.index).hnsw.efSearch = 16
    faiss.write_index(shallow, str(copy / "images.faiss"))
    assert faiss.downcast_index(SearchIndex(copy).image_index.index).hnsw.efSearch == HNSW_EF_SEARCH
