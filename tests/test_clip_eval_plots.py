"""`animatch eval`'s plots are drawn to the data: the cosine histograms span the cosines that occur (not -1..1),
Recall@k stops at the number of candidates, and the legends name models by run or hub id, never `best`."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from animatch.clip.evaluation import model_label, recall_figure, similarity_figure, write_plots
from animatch.evaluate import retrieval


def _plot_data(n: int, signal: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    sim = 0.1 + 0.05 * rng.normal(size=(n, n)) + signal * np.eye(n)
    owner = np.arange(n)
    matched, unmatched = retrieval.matched_unmatched(sim, owner)
    ks = [k for k in retrieval.RECALL_CURVE_KS if k <= n]
    return {"matched": matched, "unmatched": unmatched, "n_candidates": n,
            "curve": retrieval.recall_curve(sim, owner, ks)}


def test_plots_span_the_data_and_stop_at_the_candidate_count(tmp_path):
    plots = {"clip-run/best": _plot_data(16, 0.2, 0), "baseline: clip-tiny": _plot_data(16, 0.0, 1)}
    limits = write_plots(plots, tmp_path)
    for name in ("similarity_hist.png", "recall_at_k.png"):
        with Image.open(tmp_path / name) as image:
            assert image.width >= 600 and image.height >= 350
    data = np.concatenate([np.concatenate([p["matched"], p["unmatched"]]) for p in plots.values()])
    for panel in limits["similarity_hist.png"]:
        lo, hi = panel["xlim"]
        assert lo <= data.min() and hi >= data.max() and hi - lo < 1.3 * (data.max() - data.min()) + 0.02
    (recall,) = limits["recall_at_k.png"]
    assert recall["xlim"] == (1, 16) and recall["ylim"] == (0, 1.02)


def test_recall_curve_of_many_candidates_stops_at_fifty_and_shows_chance():
    fig = recall_figure({"m": _plot_data(80, 0.2, 2)})
    ax = fig.axes[0]
    assert ax.get_xlim() == (1, 50) and ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["m, image->text", "m, text->image", "chance (k / 80)"]
    plt.close(fig)


def test_histograms_say_which_is_which():
    fig = similarity_figure({"clip-run/best": _plot_data(10, 0.3, 3)})
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0].startswith("unmatched: image with another character's text (mean ")
    assert labels[1].startswith("matched: image with its own text (mean ")
    assert fig.axes[0].get_title().startswith("clip-run/best: cosine gap ")
    plt.close(fig)


@pytest.mark.parametrize(("role", "model", "expected"), [
    ("model", "{tmp}/clip-run/best", "clip-run/best"), ("baseline", "{tmp}/clip-tiny", "baseline: clip-tiny"),
    ("baseline", "openai/clip-vit-base-patch32", "baseline: openai/clip-vit-base-patch32")])
def test_models_are_named_by_run_or_hub_id(role, model, expected, tmp_path):
    for d in ("clip-run/best", "clip-tiny"):
        (tmp_path / d).mkdir(parents=True)
    assert model_label(role, model.format(tmp=tmp_path)) == expected
