"""Embedding and search speed: batched vs naive embedding, cold vs cached rerun, faiss search latency.

Usage: .venv/bin/python bench/embed.py [--images DIR] [--model MODEL] [--n 512] [--workers 2]
Without --images, draws a synthetic dataset of --n characters; without --model, builds clip-tiny (so the
figures then say little about a real ViT, where the model dominates). On the same images and model:
images/s of `embed_images` (batched, worker decoding) vs a naive per-image loop with the HF processor and
model (goal >= 5x); a cold run that fills an empty embedding cache vs a cached rerun (goal >= 20x); and
query latency p50/p99 over 100k random 512-d embeddings (goal p50 < 20 ms), of an exact faiss inner-product
index and of the index `animatch index` builds at that size (HNSW above `--approximate-above`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch
from PIL import Image

from animatch.clip.cache import EmbeddingCache
from animatch.clip.embed import embed_images
from animatch.clip.index import build_faiss
from animatch.clip.index import HNSW_EF_SEARCH
from animatch.config import IndexConfig, SynthConfig
from animatch.data.images import list_image_files
from animatch.data.synth import run_synth
from animatch.models.hub import load_clip
from animatch.models.tiny import build_tiny


def naive_loop(model, processor, paths: list[Path]) -> None:
    """What a first script does: one image at a time through the HF processor and model."""
    with torch.no_grad():
        for path in paths:
            inputs = processor(images=Image.open(path).convert("RGB"), return_tensors="pt")
            model.get_image_features(pixel_values=inputs["pixel_values"].to(model.device))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _latency_ms(index, queries: np.ndarray) -> tuple[float, float]:
    index.search(queries[:10], 10)
    times = []
    for row in queries:
        start = time.perf_counter()
        index.search(row[None], 10)
        times.append(time.perf_counter() - start)
    return float(np.percentile(times, 50) * 1000), float(np.percentile(times, 99) * 1000)


def search_latency(n: int = 100_000, dim: int = 512, queries: int = 500) -> dict:
    """p50/p99 of the exact index and of the index `animatch index` builds for n vectors (its default
    threshold), plus the latter's build time and recall@10 against exact search."""
    rng = np.random.default_rng(0)
    vectors = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((n, dim), dtype=np.float32)), dim=1)
    q = vectors[:queries].numpy() + 0.1 * rng.standard_normal((queries, dim), dtype=np.float32)
    faiss.normalize_L2(q)
    exact = build_faiss(vectors, list(range(n)), approximate_above=n)
    start = time.perf_counter()
    default = build_faiss(vectors, list(range(n)), approximate_above=IndexConfig.approximate_above)
    built = time.perf_counter() - start
    inner = faiss.downcast_index(default.index)
    if isinstance(inner, faiss.IndexHNSWFlat):
        inner.hnsw.efSearch = HNSW_EF_SEARCH
    truth, found = exact.search(q, 10)[1], default.search(q, 10)[1]
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, found)]))
    return {"exact": _latency_ms(exact, q), "default": _latency_ms(default, q), "kind": type(inner).__name__,
            "build_s": built, "recall": recall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", help="folder of images (default: a synthetic dataset of --n characters)")
    parser.add_argument("--model", help="CLIP model (default: a freshly built clip-tiny)")
    parser.add_argument("--n", type=int, default=512, help="images to embed")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.images is None:
            run_synth(SynthConfig(out=str(tmp / "synth"), n=args.n, image_size=128, workers=args.workers))
            args.images = tmp / "synth"
        model_name = args.model or str(build_tiny("clip-tiny", tmp / "clip-tiny"))
        paths = list_image_files(args.images)[: args.n]
        model, processor = load_clip(model_name)
        kw = {"batch_size": args.batch_size, "workers": args.workers, "progress": False}
        embed_images(model, processor, paths[:8], **kw)  # warm-up: allocator, thread pools
        naive = timed(lambda: naive_loop(model, processor, paths))
        batched = timed(lambda: embed_images(model, processor, paths, **kw))
        cold = timed(lambda: embed_images(model, processor, paths, cache=EmbeddingCache(tmp / "cache", model,
                                                                                        processor), **kw))
        cached_cache: list[EmbeddingCache] = []
        cached = timed(lambda: (cached_cache.append(EmbeddingCache(tmp / "cache", model, processor)),
                                embed_images(model, processor, paths, cache=cached_cache[0], **kw)))
        assert cached_cache[0].stats.images_embedded == 0
        search = search_latency()
    n = len(paths)
    print(f"model {args.model or 'clip-tiny (built)'}, {n} images from {args.images if args.model else 'synth'}, "
          f"batch {args.batch_size}, {args.workers} workers, {torch.get_num_threads()} torch threads, "
          f"device {model.device}")
    print(f"naive per-image loop : {n / naive:8.1f} images/s")
    print(f"animatch embed_images: {n / batched:8.1f} images/s  ({naive / batched:.1f}x, goal >= 5x)")
    print(f"cold run, cache fill : {n / cold:8.1f} images/s")
    print(f"cached rerun         : {n / cached:8.1f} images/s  ({cold / cached:.1f}x, goal >= 20x; "
          "includes loading the cache and hashing the model)")
    print("faiss over 100k random 512-d embeddings, k=10, one query at a time (goal p50 < 20 ms):")
    print(f"  exact IndexFlatIP         : p50 {search['exact'][0]:6.2f} ms, p99 {search['exact'][1]:6.2f} ms")
    print(f"  animatch index's default  : p50 {search['default'][0]:6.2f} ms, p99 {search['default'][1]:6.2f} ms  "
          f"({search['kind']}, built in {search['build_s']:.0f} s, recall@10 vs exact {search['recall']:.2f} "
          "on structureless random vectors)")


if __name__ == "__main__":
    main()
