"""Embedding and search speed: batched vs naive embedding, cold vs cached rerun, faiss search latency and recall.

Usage: .venv/bin/python bench/embed.py [--images DIR] [--model MODEL] [--n 512] [--workers 2]
       [--search-model TRAINED_CLIP] [--search-n 100000] [--skip-embedding]
Without --images, draws a synthetic dataset of --n characters; without --model, builds clip-tiny (so the
figures then say little about a real ViT, where the model dominates). On the same images and model:
images/s of `embed_images` (batched, worker decoding) vs a naive per-image loop with the HF processor and
model (goal >= 5x); a cold run that fills an empty embedding cache vs a cached rerun (goal >= 20x). Then query
latency p50/p99 (goal p50 < 20 ms) of an exact faiss inner-product index and of the index `animatch index`
builds at that size (HNSW above `--approximate-above`, with its shipped depth), and the latter's recall@10
against exact: over --search-n random 512-d vectors, and with --search-model over a trained model's
embeddings of --search-n synthetic descriptions queried with 500 images (goal: recall >= 0.95, p50 <= 5 ms)."""

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
from animatch.clip.embed import embed_images, embed_texts
from animatch.clip.search_index import build_faiss
from animatch.config import IndexConfig, SynthConfig
from animatch.data.images import list_image_files
from animatch.data.synth import plan_records, run_synth
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


def search_figures(vectors: np.ndarray, queries: np.ndarray, depths: list[int]) -> dict:
    """p50/p99 of the exact index and of the index `animatch index` builds at this size (its default threshold
    and settings), plus the latter's build time and recall@10 against exact search; then the same for each
    other search depth (efSearch) in `depths`."""
    n = len(vectors)
    exact = build_faiss(torch.from_numpy(vectors), list(range(n)), approximate_above=n)
    start = time.perf_counter()
    default = build_faiss(torch.from_numpy(vectors), list(range(n)), approximate_above=IndexConfig.approximate_above,
                          neighbors=IndexConfig.hnsw_neighbors)
    built = time.perf_counter() - start
    truth = exact.search(queries, 10)[1]
    inner = faiss.downcast_index(default.index)
    kind = type(inner).__name__ + (f" M={IndexConfig.hnsw_neighbors} efConstruction={inner.hnsw.efConstruction}"
                                   if hasattr(inner, "hnsw") else "")
    shipped = inner.hnsw.efSearch if hasattr(inner, "hnsw") else None
    found: dict = {}
    for depth in [shipped, *(d for d in depths if d != shipped and hasattr(inner, "hnsw"))]:
        if depth is not None:
            inner.hnsw.efSearch = depth
        hits = default.search(queries, 10)[1]
        found[depth] = (_latency_ms(default, queries),
                        float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, hits)])))
    return {"exact": _latency_ms(exact, queries), "approximate": found, "shipped": shipped, "kind": kind,
            "build_s": built, "n": n, "dim": vectors.shape[1]}


def random_set(n: int = 100_000, dim: int = 512, queries: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Structureless unit vectors, queries near indexed ones: the worst case for a graph index."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    faiss.normalize_L2(vectors)
    q = vectors[:queries] + 0.1 * rng.standard_normal((queries, dim), dtype=np.float32)
    faiss.normalize_L2(q)
    return vectors, q


def trained_set(model_name: str, tmp: Path, n: int, queries: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """What `animatch search --image` meets with a trained model: a description index of n synthetic characters
    (their appearances as `embed_texts` embeds them) queried with the images of `queries` other characters."""
    model, processor = load_clip(model_name)
    texts = [r["appearance"] for r in plan_records(n, seed=101)]
    vectors = embed_texts(model, processor, texts, batch_size=256, progress=True).numpy()
    run_synth(SynthConfig(out=str(tmp / "queries"), n=queries, seed=102, workers=workers))
    images = embed_images(model, processor, list_image_files(tmp / "queries"), workers=workers, progress=False)[0]
    return np.ascontiguousarray(vectors), np.ascontiguousarray(images.numpy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", help="folder of images (default: a synthetic dataset of --n characters)")
    parser.add_argument("--model", help="CLIP model (default: a freshly built clip-tiny)")
    parser.add_argument("--n", type=int, default=512, help="images to embed")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--search-model", help="a trained CLIP (e.g. bench/train_synth.py's RUN/run/best): also "
                        "measure search over its embeddings of --search-n synthetic descriptions")
    parser.add_argument("--search-n", type=int, default=100_000, help="vectors in each search measurement")
    parser.add_argument("--skip-embedding", action="store_true", help="measure search only")
    parser.add_argument("--ef-search", type=int, nargs="*", default=[], help="also measure these HNSW search depths")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not args.skip_embedding:
            embedding(args, tmp)
        searches = {f"{args.search_n // 1000}k random 512-d vectors (recall here means little: no structure)":
                    search_figures(*random_set(args.search_n), args.ef_search)}
        if args.search_model:
            searches[f"{args.search_n // 1000}k descriptions embedded by {args.search_model}, queried with images"] = \
                search_figures(*trained_set(args.search_model, tmp, args.search_n, 500, args.workers),
                               args.ef_search)
    print(f"faiss, k=10, one query at a time, {torch.get_num_threads()} threads (goal: p50 < 20 ms; the approximate "
          "index recall@10 >= 0.95 against exact on trained embeddings at p50 <= 5 ms):")
    for name, f in searches.items():
        print(f"  {name}: {f['n']} x {f['dim']}-d")
        print(f"    exact IndexFlatIP        : p50 {f['exact'][0]:6.2f} ms, p99 {f['exact'][1]:6.2f} ms")
        for depth, ((p50, p99), recall) in f["approximate"].items():
            name = "animatch index's default" if depth == f["shipped"] else f"the same, efSearch={depth}"
            about = f" ({f['kind']} efSearch={depth}, built in {f['build_s']:.0f} s)" if depth == f["shipped"] else ""
            print(f"    {name:25}: p50 {p50:6.2f} ms, p99 {p99:6.2f} ms, recall@10 vs exact {recall:.3f}{about}")


def embedding(args, tmp: Path) -> None:
    """Print batched vs naive embedding and cold vs cached rerun throughput."""
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
    n = len(paths)
    print(f"model {args.model or 'clip-tiny (built)'}, {n} images from {args.images if args.model else 'synth'}, "
          f"batch {args.batch_size}, {args.workers} workers, {torch.get_num_threads()} torch threads, "
          f"device {model.device}")
    print(f"naive per-image loop : {n / naive:8.1f} images/s")
    print(f"animatch embed_images: {n / batched:8.1f} images/s  ({naive / batched:.1f}x, goal >= 5x)")
    print(f"cold run, cache fill : {n / cold:8.1f} images/s")
    print(f"cached rerun         : {n / cached:8.1f} images/s  ({cold / cached:.1f}x, goal >= 20x; "
          "includes loading the cache and hashing the model)")


if __name__ == "__main__":
    main()
