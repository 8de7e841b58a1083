"""`animatch eval` and the validation used during training: the reference project's four measures.

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

import matplotlib
import numpy as np
import torch

from animatch.clip.embed import embed_chunked, embed_images, embed_texts, pool_embeddings
from animatch.config import EvalConfig
from animatch.data.schema import load_split
from animatch.errors import UserError
from animatch.evaluate import retrieval
from animatch.evaluate.text import bleu, rouge_l
from animatch.models.hub import load_clip
from animatch.runs import claim_output, markdown_table, write_json, write_run_files

RECALL_KEYS = ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10")


def _chunks(record: dict) -> list[str]:
    return record.get("appearance_chunks") or [record["appearance"]]


def embed_split(model, processor, records: list[dict], root: str | Path, *, batch_size: int = 128,
                workers: int = 0, modes: tuple[str, ...] = ("pooled",), progress: bool = True) -> dict:
    """Embed the images of `records` and, for those that loaded, their texts in each of `modes`.

    Returns {"records": kept records, "failures": [(path, reason)], "images": [N, D],
    "texts": {mode: ([M, D], text_to_image [M])}}.
    """
    paths = [Path(root) / r["file_name"] for r in records]
    images, ok, failures = embed_images(model, processor, paths, batch_size=batch_size, workers=workers,
                                        progress=progress)
    kept = [records[i] for i in ok]
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


def _summary_row(name: str, m: dict) -> dict:
    row = {"model": name, "accuracy": m["accuracy"], f"in-batch acc (B={m['in_batch_size']})": m["in_batch_accuracy"]}
    row.update({k: m["pooled"][k] for k in RECALL_KEYS})
    row.update({"t2i mean rank": m["pooled"]["t2i_mean_rank"], "cosine gap": m["cosine"]["cosine_gap"],
                "BLEU": m["bleu"], "ROUGE-L": m["rouge_l"]})
    return row


def model_label(role: str, model_id: str) -> str:
    """A legend name for a model: its run and checkpoint (`clip-run/best`) or hub id, after `baseline: ` for the
    baseline; never a bare `best`."""
    path = Path(model_id)
    name = model_id
    if path.is_dir():
        path = path.resolve()
        name = f"{path.parent.name}/{path.name}" if path.name in ("best", "last") else path.name
    return name if role == "model" else f"{role}: {name}"


def similarity_figure(plots: dict[str, dict]):
    """Matched vs unmatched cosine, one panel per model, on one x range fitted to the data (not -1..1)."""
    import matplotlib.pyplot as plt

    values = np.concatenate([np.asarray(p[k], dtype=np.float64) for p in plots.values()
                             for k in ("matched", "unmatched")])
    lo, hi = (float(values.min()), float(values.max())) if values.size else (-1.0, 1.0)
    pad = max(0.05 * (hi - lo), 0.01)
    bins = np.linspace(lo - pad, hi + pad, 61)
    fig, axes = plt.subplots(1, len(plots), figsize=(5.5 * len(plots), 3.8), squeeze=False)
    for ax, (name, p) in zip(axes[0], plots.items()):
        for key, label, color in (("unmatched", "unmatched: image with another character's text", "tab:blue"),
                                  ("matched", "matched: image with its own text", "tab:orange")):
            data = np.asarray(p[key], dtype=np.float64)
            ax.hist(data, bins=bins, alpha=0.6, density=True, color=color, label=f"{label} (mean {data.mean():.2f})")
            ax.axvline(data.mean(), color=color, linestyle="--", linewidth=1)
        gap = np.mean(p["matched"]) - np.mean(p["unmatched"])
        ax.set(title=f"{name}: cosine gap {gap:.3f}", xlabel="cosine similarity", ylabel="density",
               xlim=(bins[0], bins[-1]))
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def recall_figure(plots: dict[str, dict]):
    """Recall@k both ways for k from 1 to the number of candidates (at most 50), with chance for scale."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    n = max(p["n_candidates"] for p in plots.values())
    for (name, p), color in zip(plots.items(), ("tab:orange", "tab:blue", "tab:green")):
        ax.plot(p["curve"]["k"], p["curve"]["i2t"], marker=".", color=color, label=f"{name}, image->text")
        ax.plot(p["curve"]["k"], p["curve"]["t2i"], marker=".", linestyle="--", color=color,
                label=f"{name}, text->image")
    ks = np.arange(1, max(max(p["curve"]["k"]) for p in plots.values()) + 1)
    ax.plot(ks, ks / n, color="grey", linewidth=1, linestyle=":", label=f"chance (k / {n})")
    ax.set(xlabel=f"k (of {n} candidates)", ylabel="Recall@k", ylim=(0, 1.02), xlim=(1, ks[-1]),
           title=f"Recall@k over {n} characters")
    if ks[-1] > 12:
        ax.set_xscale("log")
    ticks = sorted({k for k in (1, 2, 5, 10, 20, 50) if k < ks[-1]} | {int(ks[-1])})
    ax.set_xticks(ticks, [str(k) for k in ticks])
    ax.minorticks_off()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def write_plots(plots: dict[str, dict], out: Path) -> dict[str, list[dict]]:
    """Write similarity_hist.png and recall_at_k.png; returns each file's Axes limits, for checking."""
    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    limits = {}
    for name, fig in (("similarity_hist.png", similarity_figure(plots)), ("recall_at_k.png", recall_figure(plots))):
        fig.savefig(out / name, dpi=100)
        limits[name] = [{"xlim": ax.get_xlim(), "ylim": ax.get_ylim()} for ax in fig.axes]
        plt.close(fig)
    return limits


def run_eval(cfg: EvalConfig) -> int:
    out = claim_output(cfg, "eval")
    records = load_split(cfg.split_dir, cfg.split)
    if cfg.max_items:
        records = records[: cfg.max_items]
    models = {"model": cfg.model, **({"baseline": cfg.baseline} if cfg.baseline else {})}
    results, plots = {}, {}
    for role, model_id in models.items():
        results[role], plots[model_label(role, model_id)] = evaluate_model(model_id, records, cfg)
    write_json(out / "eval.json", {"split": cfg.split, **results})
    write_plots(plots, out)
    rows = [_summary_row(role, m) for role, m in results.items()]
    modes = [{"model": role, "texts": mode, **{k: m[mode][k] for k in RECALL_KEYS}}
             for role, m in results.items() for mode in ("pooled", "chunk_pooled", "truncated", "chunks")]
    m = results["model"]
    report = (f"# animatch eval ({cfg.split} split, {m['n_characters']} characters)\n\n"
              + "\n".join(f"- {role}: `{mid}`" for role, mid in models.items())
              + f"\n- images that failed to load: {m['n_failed_images']}\n\n"
              "## Summary (pooled appearance texts: the mean over a character's chunk windows)\n\n"
              f"{markdown_table(rows, floatfmt='.3f')}\n\n"
              f"## Long texts: window pooling (pooled) vs chunk pooling vs first-77-token truncation vs per-chunk "
              f"candidates\n\n"
              f"{markdown_table(modes, floatfmt='.3f')}\n\n![similarity](similarity_hist.png) "
              f"![recall](recall_at_k.png)\n")
    write_run_files(out, cfg, report=report, report_name="eval.md")
    print(report)
    return 0
