"""`animatch eval`: the reference project's four measures of one model (and a baseline) on a split, the job.

The measures are computed by `clip.measures`; this module owns what the run writes: eval.json, the summary
and long-text tables of eval.md, and the two figures (matched vs unmatched cosine, Recall@k curves).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

from animatch.clip.measures import RECALL_KEYS, evaluate_model
from animatch.config import EvalConfig
from animatch.data.schema import load_split
from animatch.runs import claim_output, markdown_table, write_json, write_run_files


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
