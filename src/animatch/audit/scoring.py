"""The audit's numbers and rules: pair scores from the cosine matrix, sentence deficits, calibrated thresholds.

Pair i is (image i, text i); all embeddings are L2-normalised, so cosines are dot products.

Pair rule. The pair's cosine c_ii is compared with the image's cosines to every other text (its row) and
with the text's cosines to every other image (its column): z_text = (c_ii - mean_j c_ij) / sd_j c_ij, z_image
the same over the column, and fit = (z_text + z_image) / 2, the number of standard deviations by which the
pair stands out from random pairings. The z-scores remove the per-image and per-text offsets that make raw
cosines incomparable across pairs. A pair is flagged when fit < threshold. Reported beside it: the cosine, the
rank of its text among all texts for its image and of its image among all images for its text (1 = best), and
title_z, c_ii against the image's cosines to the texts of its title-mates (null with fewer than two mates).

Pair threshold. Unless given, it is calibrated on the calibration pairs (the val split, or all pairs when val
is small): their fits as they are (val is assumed mostly clean) against the fits of simulated swaps (each
image with the texts of `calibration_swaps` other calibration pairs). The threshold maximises Youden's
J = TPR - FPR (TPR: share of simulated swaps flagged, FPR: share of calibration pairs flagged) and sits in the
middle of the best gap between two observed fits. The argmax does not move when some calibration pairs are
in truth mismatched like the swaps (J only scales by 1 - contamination), so a dirty val split does not bias it.

Sentence rule. Every sentence is embedded alone. Its deficit is the mean cosine of the sentence with its
best-fitting reference images (the top 2%, at least 3, of a seeded sample of the images) minus its cosine
with the pair's own image: how far the image falls short of the images that fit the sentence best. A visual
sentence that fits has a deficit near 0, one stating something the image lacks a large one, and a non-visual
(filler) sentence, whose cosines barely vary between images, a small one. A sentence does not fit when its
deficit exceeds the sentence threshold. Removing a sentence that fits damages a clean text, so this threshold
bounds that damage instead of balancing errors: unless given, it is the (1 - sentence_fpr) quantile of the
deficits of the calibration pairs' own sentences (mostly fitting). Its power is reported as the share of
alien sentences (a random sentence of another calibration pair's text, one per simulated swap) it catches.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

EPS = 1e-6
TOP_FRACTION = 0.02
MIN_TOP = 3


@dataclass
class PairStats:
    """Per-pair scores (numpy arrays of length n) and the row/column statistics they come from."""
    cosine: np.ndarray
    z_text: np.ndarray
    z_image: np.ndarray
    fit: np.ndarray
    text_rank: np.ndarray
    image_rank: np.ndarray
    row_mean: np.ndarray
    row_sd: np.ndarray
    col_mean: np.ndarray
    col_sd: np.ndarray


def mean_sd(total: torch.Tensor, squares: torch.Tensor, own: torch.Tensor, n: int) -> tuple[torch.Tensor, ...]:
    """Mean and sd of a row (or column) of n cosines, leaving out the pair's own cosine."""
    mean = (total - own) / (n - 1)
    var = ((squares - own * own) / (n - 1) - mean * mean).clamp_min(0)
    return mean, var.sqrt()


def pair_stats(image_emb: torch.Tensor, text_emb: torch.Tensor, *, block_size: int = 512,
               device: str | torch.device | None = None) -> PairStats:
    """All pair scores of the n x n cosine matrix, computed in blocks of rows (never held whole)."""
    n = image_emb.shape[0]
    if n < 2 or text_emb.shape[0] != n:
        raise ValueError(f"need n >= 2 images and as many texts, got {n} and {text_emb.shape[0]}")
    img, txt = image_emb.to(device, torch.float32), text_emb.to(device, torch.float32)
    diag = (img * txt).sum(1)
    f64 = torch.float64
    row_sum, row_sq = torch.zeros(n, dtype=f64, device=img.device), torch.zeros(n, dtype=f64, device=img.device)
    col_sum, col_sq = torch.zeros_like(row_sum), torch.zeros_like(row_sum)
    text_rank = torch.ones(n, dtype=torch.long, device=img.device)
    image_rank = torch.ones_like(text_rank)
    for start in range(0, n, block_size):
        stop = min(n, start + block_size)
        rows = torch.arange(start, stop, device=img.device)
        sim = img[start:stop] @ txt.T
        # The matmul may round the pair's own cosine differently from `diag`; use one value everywhere so
        # a pair never outranks itself.
        sim[rows - start, rows] = diag[start:stop]
        row_sum[start:stop], row_sq[start:stop] = sim.sum(1).to(f64), (sim * sim).sum(1).to(f64)
        col_sum += sim.sum(0).to(f64)
        col_sq += (sim * sim).sum(0).to(f64)
        text_rank[start:stop] += (sim > diag[start:stop, None]).sum(1)
        image_rank += (sim > diag[None, :]).sum(0)
    own = diag.to(f64)
    row_mean, row_sd = mean_sd(row_sum, row_sq, own, n)
    col_mean, col_sd = mean_sd(col_sum, col_sq, own, n)
    z_text, z_image = (own - row_mean) / (row_sd + EPS), (own - col_mean) / (col_sd + EPS)

    def np_(t: torch.Tensor) -> np.ndarray:
        return t.cpu().numpy()

    return PairStats(np_(own), np_(z_text), np_(z_image), np_((z_text + z_image) / 2), np_(text_rank),
                     np_(image_rank), np_(row_mean), np_(row_sd), np_(col_mean), np_(col_sd))


def fit_of(cosine: np.ndarray, row_mean: np.ndarray, row_sd: np.ndarray, col_mean: np.ndarray,
           col_sd: np.ndarray) -> np.ndarray:
    """The fit score of pairs given their cosine and their image's row and text's column statistics."""
    return ((cosine - row_mean) / (row_sd + EPS) + (cosine - col_mean) / (col_sd + EPS)) / 2


def swap_fits(stats: PairStats, image_emb: torch.Tensor, text_emb: torch.Tensor, image_idx: np.ndarray,
              text_idx: np.ndarray) -> np.ndarray:
    """Fits of the pairs (image a, text b): what a pair would score if text b had been attached to image a."""
    cosine = paired_cosines(image_emb, text_emb, image_idx, text_idx)
    return fit_of(cosine, stats.row_mean[image_idx], stats.row_sd[image_idx], stats.col_mean[text_idx],
                  stats.col_sd[text_idx])


def title_z(image_emb: torch.Tensor, text_emb: torch.Tensor, titles: list[str]) -> np.ndarray:
    """Per pair, its cosine as a z-score among its image's cosines to the texts of its title-mates (NaN with
    fewer than two mates)."""
    out = np.full(len(titles), np.nan)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, title in enumerate(titles):
        groups[title].append(i)
    for members in groups.values():
        m = len(members)
        if m < 3:
            continue
        idx = torch.tensor(members)
        sim = image_emb[idx].float() @ text_emb[idx].float().T
        mates = sim[~torch.eye(m, dtype=torch.bool)].view(m, m - 1)
        out[members] = ((sim.diagonal() - mates.mean(1)) / (mates.std(1) + EPS)).numpy()
    return out


def sentence_tops(sentence_emb: torch.Tensor, reference_emb: torch.Tensor, *, block_size: int = 4096,
                  device: str | torch.device | None = None) -> np.ndarray:
    """Per sentence, the mean cosine with its best-fitting reference images (top TOP_FRACTION, >= MIN_TOP)."""
    r = reference_emb.shape[0]
    k = min(r, max(MIN_TOP, math.ceil(TOP_FRACTION * r)))
    ref = reference_emb.to(device, torch.float32)
    tops = [torch.empty(0)]
    for start in range(0, sentence_emb.shape[0], block_size):
        sim = sentence_emb[start:start + block_size].to(device, torch.float32) @ ref.T
        tops.append(sim.topk(k, dim=1).values.mean(1).cpu())
    return torch.cat(tops).double().numpy()


def paired_cosines(a: torch.Tensor, b: torch.Tensor, a_idx: np.ndarray, b_idx: np.ndarray,
                   block_size: int = 65536) -> np.ndarray:
    """cos(a[a_idx[k]], b[b_idx[k]]) for every k, gathered in blocks (never [len(a_idx), D] at once)."""
    out = [np.empty(0)]
    for start in range(0, len(a_idx), block_size):
        ia, ib = (torch.as_tensor(x[start:start + block_size]) for x in (a_idx, b_idx))
        out.append((a[ia].float() * b[ib].float()).sum(1).double().numpy())
    return np.concatenate(out)


def deficits(sentence_emb: torch.Tensor, tops: np.ndarray, image_emb: torch.Tensor, sentence_idx: np.ndarray,
             image_idx: np.ndarray) -> np.ndarray:
    """Deficit of sentence s against image i, for each (s, i) of the two index arrays."""
    return tops[sentence_idx] - paired_cosines(sentence_emb, image_emb, sentence_idx, image_idx)


def simulated_swaps(indices: np.ndarray, per_pair: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(image, text) index arrays pairing each of `indices` with the texts of `per_pair` others (never its own)."""
    indices = np.asarray(indices)
    m = len(indices)
    if m < 2 or per_pair < 1:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    order = indices[rng.permutation(m)]
    shifts = rng.choice(np.arange(1, m), size=min(per_pair, m - 1), replace=False)
    return np.concatenate([order] * len(shifts)), np.concatenate([np.roll(order, -int(s)) for s in shifts])


def quantile_threshold(clean: np.ndarray, mismatched: np.ndarray, fpr: float) -> dict:
    """The threshold t (flag when score > t) at the (1 - fpr) quantile of `clean`, with the share of `mismatched`
    above it. Returns {"value", "youden_j", "tpr", "fpr"} like `youden_threshold`."""
    clean, mismatched = np.asarray(clean, float), np.asarray(mismatched, float)
    value = float(np.quantile(clean, 1.0 - fpr))
    tpr, measured = float((mismatched > value).mean()), float((clean > value).mean())
    return {"value": value, "youden_j": tpr - measured, "tpr": tpr, "fpr": measured}


def youden_threshold(clean: np.ndarray, mismatched: np.ndarray) -> dict:
    """The threshold t (flag when score < t) maximising TPR - FPR, mid-gap; ties go to the widest gap.

    Returns {"value", "youden_j", "tpr", "fpr"}. With no separation at all (J <= 0) it flags nothing."""
    clean, mismatched = np.sort(np.asarray(clean, float)), np.sort(np.asarray(mismatched, float))
    if not len(clean) or not len(mismatched):
        raise ValueError("youden_threshold needs scores of both kinds")
    values = np.unique(np.concatenate([clean, mismatched]))
    cuts = np.concatenate([[values[0] - 1.0], (values[:-1] + values[1:]) / 2, [values[-1] + 1.0]])
    widths = np.concatenate([[0.0], np.diff(values), [0.0]])
    tpr = np.searchsorted(mismatched, cuts, side="left") / len(mismatched)
    fpr = np.searchsorted(clean, cuts, side="left") / len(clean)
    j = tpr - fpr
    if j.max() <= 0:
        best = 0
    else:
        candidates = np.flatnonzero(j >= j.max() - 1e-12)
        best = int(candidates[np.argmax(widths[candidates])])
    return {"value": float(cuts[best]), "youden_j": float(j[best]), "tpr": float(tpr[best]), "fpr": float(fpr[best])}
