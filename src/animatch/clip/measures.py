"""A CLIP model's measures on a split: what `eval` reports and what `train` validates with (`validation_metrics`).

For a split: (1) cross-modal matching accuracy, over all candidates and in batches of the reference's
training batch size; (2) Recall@1/5/10 both ways with mean/median rank; (3) cosine similarity of matched
vs unmatched pairs and their gap; (4) BLEU-4 / ROUGE-L between the appearance text retrieved for each
image and its own. Texts are evaluated four ways: pooled (the default representation: mean of the
normalised embeddings of the character's `chunk_windows`, the views training samples), chunk-pooled (mean
over the bare chunks), truncated (the full appearance cut at 77 tokens) and per chunk (every chunk a
separate candidate; a hit if any of the character's chunks is in the top k, as CLIP_benchmark does).
Images that fail to load are excluded and listed. Each split is embedded once per model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from animatch.clip.embed import embed_chunked, embed_images, embed_texts, pool_embeddings
from animatch.config import EvalConfig
from animatch.data.safepath import paths_inside
from animatch.errors import UserError
from animatch.evaluate import retrieval
from animatch.evaluate.text import bleu, rouge_l
from animatch.models.hub import load_clip

RECALL_KEYS = ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10")


def _chunks(record: dict) -> list[str]:
    return record.get("appearance_chunks") or [record["appearance"]]


def embed_split(model, processor, records: list[dict], root: str | Path, *, batch_size: int = 128,
                workers: int = 0, modes: tuple[str, ...] = ("pooled",), progress: bool = True) -> dict:
    """Embed the images of `records` and, for those that loaded, their texts in each of `modes`.

    Returns {"records": kept records, "failures": [(path, reason)], "images": [N, D],
    "texts": {mode: ([M, D], text_to_image [M])}}.
    """
    inside, failures = paths_inside(root, [r["file_name"] for r in records])  # the others are never opened
    images, ok, failed = embed_images(model, processor, [p for _, p in inside], batch_size=batch_size,
                                      workers=workers, progress=progress)
    kept, failures = [records[inside[i][0]] for i in ok], failures + failed
    texts = {}
    n = np.arange(len(kept))
    if "pooled" in modes:
        texts["pooled"] = (embed_chunked(model, processor, [_chunks(r) for r in kept], batch_size=batch_size), n)
    if "truncated" in modes:
        texts["truncated"] = (embed_texts(model, processor, [r["appearance"] for r in kept], batch_size=batch_size), n)
    if "chunks" in modes or "chunk_pooled" in modes:  # both from one embedding of the bare chunks
        owner = np.array([i for i, r in enumerate(kept) for _ in _chunks(r)], dtype=np.int64)
        chunk_emb = embed_texts(model, processor, [c for r in kept for c in _chunks(r)], batch_size=batch_size)
        if "chunks" in modes:
            texts["chunks"] = (chunk_emb, owner)
        if "chunk_pooled" in modes:
            texts["chunk_pooled"] = (pool_embeddings(chunk_emb, torch.from_numpy(owner), len(kept)), n)
    return {"records": kept, "failures": failures, "images": images, "texts": texts}


def validation_metrics(model, processor, records: list[dict], root: str | Path, *, batch_size: int = 128) -> dict:
    """Recall@K both ways on chunk-pooled texts, their mean ("mean_recall", the best-checkpoint criterion),
    and the cosine gap."""
    emb = embed_split(model, processor, records, root, batch_size=batch_size, progress=False)
    if not emb["records"]:
        raise UserError("no validation image could be loaded")
    text_emb, owner = emb["texts"]["pooled"]
    sim = (emb["images"] @ text_emb.T).numpy()
    metrics = {k: v for k, v in retrieval.retrieval_metrics(sim, owner).items() if k in RECALL_KEYS}
    metrics["mean_recall"] = float(np.mean([metrics[k] for k in RECALL_KEYS]))
    metrics["cosine_gap"] = retrieval.cosine_stats(sim, owner)["cosine_gap"]
    return metrics


def evaluate_model(model_id: str, records: list[dict], cfg: EvalConfig) -> tuple[dict, dict]:
    """All four measures for one model; returns (metrics, plot data)."""
    model, processor = load_clip(model_id, device=cfg.device)
    emb = embed_split(model, processor, records, cfg.data, batch_size=cfg.batch_size, workers=cfg.workers,
                      modes=("pooled", "chunk_pooled", "truncated", "chunks"))
    kept = emb["records"]
    if len(kept) < 2:
        raise UserError(f"only {len(kept)} image(s) of the {cfg.split} split could be loaded; need at least 2")
    metrics: dict = {"model": model_id, "n_characters": len(kept), "n_failed_images": len(emb["failures"]),
                     "failed_images": [{"path": p, "reason": r} for p, r in emb["failures"][:50]]}
    plots: dict = {}
    for mode, (text_emb, owner) in emb["texts"].items():
        sim = (emb["images"] @ text_emb.T).numpy()
        metrics[mode] = retrieval.retrieval_metrics(sim, owner)
        if mode == "pooled":
            metrics["accuracy"] = retrieval.accuracy_top1(sim, owner)
            metrics["in_batch_accuracy"] = retrieval.in_batch_accuracy(sim, owner, cfg.in_batch_size)
            metrics["in_batch_size"] = cfg.in_batch_size
            metrics["cosine"] = retrieval.cosine_stats(sim, owner)
            retrieved = sim.argmax(axis=1)
            hyps = [kept[j]["appearance"] for j in retrieved]
            refs = [r["appearance"] for r in kept]
            metrics["bleu"] = bleu(hyps, refs)
            metrics["rouge_l"] = rouge_l(hyps, refs)
            plots["matched"], plots["unmatched"] = retrieval.matched_unmatched(sim, owner)
            plots["n_candidates"] = sim.shape[1]
            ks = [k for k in retrieval.RECALL_CURVE_KS if k <= sim.shape[1]]  # not past the candidate count
            plots["curve"] = retrieval.recall_curve(sim, owner, ks)
    return metrics, plots
