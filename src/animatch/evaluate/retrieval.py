"""Retrieval metrics over an image x text similarity matrix: recall@k, ranks, accuracies, cosine statistics.

Every function takes `sim` [N_img, N_txt] (numpy array or torch tensor; higher = more similar) and
`text_to_image` [N_txt] (the index of the image, i.e. the character, each text describes; several texts
per image are allowed) and returns plain Python numbers. Conventions shared by all of them:
- Ranks are 1-based. Ties are broken PESSIMISTICALLY: rank = 1 + number of wrong candidates scoring >= the
  correct one, so a constant model gets the worst rank, never a lucky one.
- Image -> text: an image is a hit at k when ANY of its texts is in the top k (as CLIP_benchmark does); its
  rank is that of its best-scoring text. Images without any text cannot be scored: they are left out of the
  image -> text metrics and counted in "n_images_without_text".
- Text -> image: exactly one correct image per text.
The matrix is processed in row blocks, so memory stays bounded for tens of thousands of images and texts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

BLOCK_ELEMENTS = 1 << 22  # entries of `sim` compared at once: bounds the temporary boolean/float64 blocks
DEFAULT_MAX_UNMATCHED = 1_000_000
RECALL_CURVE_KS = tuple(range(1, 51))


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor; bfloat16 has no numpy dtype, hence the float() first
        x = x.detach().cpu()
        x = x.float() if x.is_floating_point() else x
        return x.numpy()
    return np.asarray(x)


def _validate(sim: Any, text_to_image: Any) -> tuple[np.ndarray, np.ndarray]:
    sim = _as_numpy(sim)
    if sim.ndim != 2:
        raise ValueError(f"sim must be a 2-D [N_img, N_txt] matrix, got shape {sim.shape}")
    if sim.dtype not in (np.float32, np.float64):
        sim = sim.astype(np.float64)
    t2i = _as_numpy(text_to_image)
    if t2i.ndim != 1 or t2i.shape[0] != sim.shape[1]:
        raise ValueError(f"text_to_image must be 1-D with one entry per text column ({sim.shape[1]}), "
                         f"got shape {t2i.shape}")
    if t2i.size and (not np.issubdtype(t2i.dtype, np.integer) or t2i.min() < 0 or t2i.max() >= sim.shape[0]):
        raise ValueError(f"text_to_image must hold image indices in [0, {sim.shape[0]})")
    if sim.shape[1] == 0:
        raise ValueError("no texts to evaluate")
    if not all(np.isfinite(sim[block]).all() for block in _row_blocks(*sim.shape)):
        raise ValueError("sim contains NaN or infinite values")
    return sim, t2i.astype(np.int64)


def _row_blocks(n_rows: int, n_cols: int) -> Iterable[slice]:
    step = max(1, BLOCK_ELEMENTS // max(1, n_cols))
    for start in range(0, n_rows, step):
        yield slice(start, min(n_rows, start + step))


def retrieval_ranks(sim: Any, text_to_image: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """Pessimistic 1-based ranks: (i2t ranks of the images that have a text, t2i ranks of every text,
    number of images without any text)."""
    sim, t2i = _validate(sim, text_to_image)
    n_img, n_txt = sim.shape
    matched = sim[t2i, np.arange(n_txt)]
    # The correct image scores >= itself, so the count below already includes the "1 +".
    t2i_ranks = np.zeros(n_txt, dtype=np.int64)
    for block in _row_blocks(n_img, n_txt):
        t2i_ranks += (sim[block] >= matched[None, :]).sum(axis=0)

    has_text = np.zeros(n_img, dtype=bool)
    has_text[t2i] = True
    i2t_ranks = np.zeros(n_img, dtype=np.int64)
    for block in _row_blocks(n_img, n_txt):
        rows = sim[block]
        own = t2i[None, :] == np.arange(block.start, block.stop)[:, None]
        best_own = np.where(own, rows, -np.inf).max(axis=1)
        i2t_ranks[block] = 1 + ((rows >= best_own[:, None]) & ~own).sum(axis=1)
    return i2t_ranks[has_text], t2i_ranks, int(n_img - has_text.sum())


def _recall(ranks: np.ndarray, k: int) -> float:
    return float((ranks <= k).mean())


def retrieval_metrics(sim: Any, text_to_image: Any, ks: Iterable[int] = (1, 5, 10)) -> dict:
    """Recall@k both ways, mean/median ranks and counts (see the module docstring for ties and
    several texts per image)."""
    i2t, t2i, n_without = retrieval_ranks(sim, text_to_image)
    metrics: dict[str, Any] = {}
    for k in ks:
        metrics[f"i2t_R@{k}"] = _recall(i2t, k)
    for k in ks:
        metrics[f"t2i_R@{k}"] = _recall(t2i, k)
    metrics.update({
        "i2t_mean_rank": float(i2t.mean()), "i2t_median_rank": float(np.median(i2t)),
        "t2i_mean_rank": float(t2i.mean()), "t2i_median_rank": float(np.median(t2i)),
        "n_images": int(i2t.size + n_without), "n_texts": int(t2i.size),
        "n_images_without_text": n_without,
    })
    return metrics


def recall_curve(sim: Any, text_to_image: Any, ks: Iterable[int] = RECALL_CURVE_KS) -> dict:
    """Recall@k for every k in `ks`, both ways, for plotting: {"k": [...], "i2t": [...], "t2i": [...]}."""
    i2t, t2i, _ = retrieval_ranks(sim, text_to_image)
    ks = [int(k) for k in ks]
    return {"k": ks, "i2t": [_recall(i2t, k) for k in ks], "t2i": [_recall(t2i, k) for k in ks]}


def accuracy_top1(sim: Any, text_to_image: Any) -> float:
    """Fraction of images (with a text) whose top-scoring text among ALL texts is one of their own
    (pessimistic ties); equal to "i2t_R@1"."""
    i2t, _, _ = retrieval_ranks(sim, text_to_image)
    return _recall(i2t, 1)


def in_batch_accuracy(sim: Any, text_to_image: Any, batch_size: int) -> float:
    """The image -> text accuracy a contrastive training loop reports on its batches.

    Pairs are (image i, first text of image i) for every image that has a text, in image order; they are
    split into consecutive batches of `batch_size` (the last may be smaller). Within a batch an image is
    right when its paired text scores strictly above every other text of the batch (pessimistic ties, as
    everywhere here). The result is right pairs / all pairs.
    """
    sim, t2i = _validate(sim, text_to_image)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    images, first_text = np.unique(t2i, return_index=True)  # np.unique returns the first occurrence
    right = 0
    for start in range(0, images.size, batch_size):
        block = sim[np.ix_(images[start:start + batch_size], first_text[start:start + batch_size])]
        diagonal = np.diagonal(block)
        right += int(((block >= diagonal[:, None]).sum(axis=1) == 1).sum())
    return right / images.size


def matched_unmatched(sim: Any, text_to_image: Any, max_unmatched: int = DEFAULT_MAX_UNMATCHED,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw similarities of matched pairs (one per text) and of unmatched (image, text) pairs, for histograms.

    All unmatched pairs are returned when there are at most `max_unmatched` of them; otherwise a
    deterministic uniform sample (with replacement, `seed`) of `max_unmatched` unmatched pairs.
    """
    return _matched_unmatched(*_validate(sim, text_to_image), max_unmatched, seed)


def _matched_unmatched(sim: np.ndarray, t2i: np.ndarray, max_unmatched: int,
                       seed: int) -> tuple[np.ndarray, np.ndarray]:
    n_img, n_txt = sim.shape
    matched = sim[t2i, np.arange(n_txt)].astype(np.float64)
    n_unmatched = (n_img - 1) * n_txt
    if n_unmatched <= max_unmatched:
        mask = np.ones(sim.shape, dtype=bool)
        mask[t2i, np.arange(n_txt)] = False
        return matched, sim[mask].astype(np.float64)
    rng = np.random.default_rng(seed)
    texts = rng.integers(0, n_txt, size=max_unmatched)
    # Each text has n_img - 1 wrong images: draw an offset among them and skip over the correct one.
    offsets = rng.integers(0, n_img - 1, size=max_unmatched)
    images = offsets + (offsets >= t2i[texts])
    return matched, sim[images, texts].astype(np.float64)


def _stats(prefix: str, mean: float | None, std: float | None, median: float | None) -> dict:
    return {f"{prefix}_mean": mean, f"{prefix}_std": std, f"{prefix}_median": median}


def cosine_stats(sim: Any, text_to_image: Any, max_unmatched: int = DEFAULT_MAX_UNMATCHED,
                 seed: int = 0) -> dict:
    """Mean / std (population) / median of matched and unmatched similarities, and
    "cosine_gap" = matched mean - unmatched mean.

    Means and stds are exact over all pairs (streamed in float64). The unmatched median is exact when there
    are at most `max_unmatched` unmatched pairs, else taken from the deterministic sample of
    `matched_unmatched` ("unmatched_median_sampled" says which). With a single image there is no unmatched
    pair: those values and the gap are None.
    """
    sim, t2i = _validate(sim, text_to_image)
    n_img, n_txt = sim.shape
    matched, unmatched_sample = _matched_unmatched(sim, t2i, max_unmatched, seed)
    n_unmatched = (n_img - 1) * n_txt
    result = {"n_matched": int(n_txt), "n_unmatched": int(n_unmatched)}
    result.update(_stats("matched", float(matched.mean()), float(matched.std()), float(np.median(matched))))
    if n_unmatched == 0:
        result.update(_stats("unmatched", None, None, None))
        result.update(cosine_gap=None, unmatched_median_sampled=False)
        return result
    total = total_sq = 0.0
    for block in _row_blocks(n_img, n_txt):
        rows = sim[block].astype(np.float64)
        total += float(rows.sum())
        total_sq += float(np.square(rows).sum())
    total -= float(matched.sum())
    total_sq -= float(np.square(matched).sum())
    mean = total / n_unmatched
    std = float(np.sqrt(max(total_sq / n_unmatched - mean * mean, 0.0)))
    result.update(_stats("unmatched", mean, std, float(np.median(unmatched_sample))))
    result.update(cosine_gap=float(matched.mean()) - mean,
                  unmatched_median_sampled=bool(n_unmatched > max_unmatched))
    return result
