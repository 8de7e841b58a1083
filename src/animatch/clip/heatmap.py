"""Similarity heatmaps (images x candidates) as PNG files, paged for large sets (matplotlib, Agg backend).

Rows are images, columns candidates, each cell the cosine written in it while cells stay readable. When the
true candidate of an image is known (`truth`), its column comes first, in row order, so a model that is right
draws a diagonal of green boxes (its best matches); a wrong best match is red, the true cell it missed dashed
white, and the best match of an image whose character is unknown orange. A page shows at most `rows_per_page`
images (when the truth is known and there are more than `max_cols` candidates, half of `max_cols`, so every
row's true and best candidates fit) and `max_cols` candidates: the true ones, each row's best, then the next
best. Cell and margin sizes follow the page's shape and its labels, so a page of 3 candidates is as legible
as one of 30. A single page is `heatmap.png`; more are `heatmap_001.png`, `heatmap_002.png`, ...
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from animatch.runs import atomic_write_bytes

DPI = 100
LABEL_CHARS = 64
LABEL_FONT = 8
CHAR_INCHES = 0.068  # mean width of a label character at LABEL_FONT
# Cells shrink from MAX to MIN inches as a page grows; numbers are written in cells of ANNOTATE_MIN or more.
CELL_MAX_IN, CELL_MIN_IN, ANNOTATE_MIN_IN = 0.9, 0.3, 0.42
TITLE_IN, COLORBAR_IN, PAD_IN = 0.75, 1.1, 0.25
RIGHT_COLOR, WRONG_COLOR, BEST_COLOR, TRUE_COLOR = "#00c853", "#ff1744", "#ff9100", "white"


def _short(label: str) -> str:
    label = " ".join(str(label).split())
    return label if len(label) <= LABEL_CHARS else label[:LABEL_CHARS - 1] + "…"


def cell_inches(n_rows: int, n_cols: int) -> float:
    """Side of a cell: large for small pages, never below CELL_MIN_IN."""
    return float(np.clip(9.0 / max(n_rows, n_cols, 1), CELL_MIN_IN, CELL_MAX_IN))


def _page_columns(block: np.ndarray, truth: Sequence[int | None], max_cols: int) -> list[int]:
    """Candidates shown for a block of rows, in display order: the rows' true candidates (row order), then
    each row's best, second best, ... (ascending index within that group when no truth is known)."""
    chosen: list[int] = []
    for c in truth:
        if c is not None and c not in chosen and len(chosen) < max_cols:
            chosen.append(int(c))
    n_true = len(chosen)
    order = np.argsort(-block, axis=1, kind="stable")
    for rank in range(block.shape[1]):  # every row's best first, then second bests, ...
        for c in order[:, rank]:
            if len(chosen) == min(max_cols, block.shape[1]):
                break
            if int(c) not in chosen:
                chosen.append(int(c))
    return chosen[:n_true] + sorted(chosen[n_true:])


def draw_page(sim: np.ndarray, rows: list[str], cols: list[str], *, truth: Sequence[int | None] | None = None,
              title: str = "", vmin: float | None = None, vmax: float | None = None) -> Figure:
    """One heatmap page as a matplotlib Figure. `truth[r]` is row r's true column (an index into `cols`) or
    None; the figure's first Axes is the heatmap (cell (r, c) centred at x=c, y=r)."""
    sim = np.asarray(sim, dtype=np.float32)
    n_rows, n_cols = sim.shape
    truth = list(truth) if truth is not None else [None] * n_rows
    vmin = float(sim.min()) if vmin is None else vmin
    vmax = float(sim.max()) if vmax is None else vmax
    cell = cell_inches(n_rows, n_cols)
    row_labels, col_labels = [_short(r) for r in rows], [_short(c) for c in cols]
    left = PAD_IN + 0.3 + CHAR_INCHES * max(map(len, row_labels), default=1)  # tick labels and the axis label
    bottom = PAD_IN + 0.4 + 0.87 * CHAR_INCHES * max(map(len, col_labels), default=1)  # labels rotated by 60 degrees
    grid_w, grid_h = cell * n_cols, cell * n_rows
    width = max(left + grid_w + COLORBAR_IN, 6.0)
    height = max(TITLE_IN + grid_h + bottom, 3.5)
    fig = plt.figure(figsize=(width, height), dpi=DPI)
    ax = fig.add_axes((left / width, bottom / height, grid_w / width, grid_h / height))
    im = ax.imshow(sim, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(n_cols), col_labels, rotation=60, ha="right", rotation_mode="anchor", fontsize=LABEL_FONT)
    ax.set_yticks(range(n_rows), row_labels, fontsize=LABEL_FONT)
    ax.set_xlabel("candidate", fontsize=LABEL_FONT)
    ax.set_ylabel("image", fontsize=LABEL_FONT)
    if cell >= ANNOTATE_MIN_IN:
        size = min(10.0, cell * 20)
        for (r, c), v in np.ndenumerate(sim):
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=size,
                    color="black" if v > (vmin + vmax) / 2 else "white")
    known = [t is not None for t in truth]
    right = 0
    for r, best in enumerate(sim.argmax(axis=1)):
        t = truth[r]
        if t is not None and t != best:
            ax.add_patch(Rectangle((t - 0.42, r - 0.42), 0.84, 0.84, fill=False, edgecolor=TRUE_COLOR,
                                   linewidth=2, linestyle=(0, (2, 1.5))))
        color = BEST_COLOR if t is None else RIGHT_COLOR if t == best else WRONG_COLOR
        right += t == best
        ax.add_patch(Rectangle((best - 0.5, r - 0.5), 1, 1, fill=False, edgecolor=color, linewidth=2.5))
    legend = "orange box: each image's best match"
    if any(known):
        legend = (f"green: best match is the true character ({right} of {sum(known)} images); red: best match is "
                  "another; dashed white: the true character it missed"
                  + ("; orange: best match, character unknown" if not all(known) else ""))
    fig.text(PAD_IN / width, 1 - 0.2 / height, title, fontsize=10, va="top", ha="left", weight="bold")
    fig.text(PAD_IN / width, 1 - 0.45 / height, legend, fontsize=8, va="top", ha="left")
    cax = fig.add_axes(((left + grid_w + 0.15) / width, bottom / height, 0.15 / width, grid_h / height))
    fig.colorbar(im, cax=cax, label="cosine similarity")
    return fig


def write_heatmaps(sim: np.ndarray, row_labels: list[str], col_labels: list[str], out_dir: str | Path, *,
                   truth: Sequence[int | None] | None = None, rows_per_page: int = 40, max_cols: int = 30,
                   title: str = "cosine similarity of each image (row) with each candidate (column)",
                   ) -> list[Path]:
    """Draw `sim` [n_images, n_candidates] into out_dir (replacing earlier heatmaps there); `truth[i]` is image
    i's true candidate index or None. Returns the files written, in page order."""
    sim = np.asarray(sim, dtype=np.float32)
    truth = list(truth) if truth is not None else [None] * sim.shape[0]
    if any(t is not None for t in truth) and sim.shape[1] > max_cols:
        rows_per_page = max(1, min(rows_per_page, max_cols // 2))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_pages = max(1, -(-sim.shape[0] // rows_per_page))
    vmin, vmax = (float(sim.min()), float(sim.max())) if sim.size else (0.0, 1.0)
    for stale in out_dir.glob("heatmap*.png"):
        stale.unlink()
    paths = []
    for page in range(n_pages):
        start = page * rows_per_page
        block, block_truth = sim[start:start + rows_per_page], truth[start:start + rows_per_page]
        cols = _page_columns(block, block_truth, max_cols)
        position = {c: i for i, c in enumerate(cols)}
        path = out_dir / ("heatmap.png" if n_pages == 1 else f"heatmap_{page + 1:03d}.png")
        page_title = title if n_pages == 1 else f"{title} (images {start + 1}-{start + len(block)})"
        fig = draw_page(block[:, cols], row_labels[start:start + len(block)], [col_labels[c] for c in cols],
                        truth=[position.get(t) if t is not None else None for t in block_truth],
                        title=page_title, vmin=vmin, vmax=vmax)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.15)  # no margin left blank
        plt.close(fig)
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths
