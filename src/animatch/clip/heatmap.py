"""Similarity heatmaps (images x candidates) as PNG files, paged for large sets (matplotlib, Agg backend).

One page shows at most `rows_per_page` images and `max_cols` candidates: when there are more candidates,
a page keeps those that score highest on any of its images, so every image's best matches stay
visible. Each image's best candidate is outlined. A single page is `heatmap.png`; more pages are
`heatmap_001.png`, `heatmap_002.png`, ... The figure size depends only on the page's shape
(`page_pixels`), so files have a predictable pixel size.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from animatch.runs import atomic_write_bytes

DPI = 100
CELL_INCHES = 0.32
LABEL_CHARS = 32
# Room for labels (rotated candidate labels below, image names left), the title and the colour bar.
LEFT_IN, RIGHT_IN, TOP_IN, BOTTOM_IN = 2.6, 1.3, 0.6, 2.0
ANNOTATE_MAX_CELLS = 400


def page_pixels(n_rows: int, n_cols: int) -> tuple[int, int]:
    """(width, height) in pixels of a page showing n_rows images and n_cols candidates."""
    width = LEFT_IN + RIGHT_IN + CELL_INCHES * max(n_cols, 4)
    height = TOP_IN + BOTTOM_IN + CELL_INCHES * max(n_rows, 4)
    return round(width * DPI), round(height * DPI)


def _short(label: str) -> str:
    label = " ".join(str(label).split())
    return label if len(label) <= LABEL_CHARS else label[:LABEL_CHARS - 1] + "…"


def _page_columns(block: np.ndarray, max_cols: int) -> np.ndarray:
    """Indices (ascending) of the candidates shown for a block of rows: the best-scoring ones."""
    if block.shape[1] <= max_cols:
        return np.arange(block.shape[1])
    order = np.argsort(-block, axis=1, kind="stable")
    chosen: list[int] = []
    for rank in range(block.shape[1]):  # every row's best first, then second bests, ...
        for c in order[:, rank]:
            if c not in chosen:
                chosen.append(int(c))
            if len(chosen) == max_cols:
                return np.sort(np.array(chosen))
    return np.sort(np.array(chosen))


def _draw_page(sim: np.ndarray, rows: list[str], cols: list[str], title: str, path: Path,
               vmin: float, vmax: float) -> None:
    width_px, height_px = page_pixels(len(rows), len(cols))
    fig = plt.figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    w, h = width_px / DPI, height_px / DPI
    ax = fig.add_axes((LEFT_IN / w, BOTTOM_IN / h, CELL_INCHES * len(cols) / w, CELL_INCHES * len(rows) / h))
    im = ax.imshow(sim, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(cols)), [_short(c) for c in cols], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), [_short(r) for r in rows], fontsize=7)
    ax.set_title(title, fontsize=9, loc="left")
    for r, c in enumerate(sim.argmax(axis=1)):
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.5))
    if sim.size <= ANNOTATE_MAX_CELLS:
        for (r, c), v in np.ndenumerate(sim):
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=5,
                    color="black" if v > (vmin + vmax) / 2 else "white")
    cax = fig.add_axes(((LEFT_IN + CELL_INCHES * len(cols) + 0.2) / w, BOTTOM_IN / h, 0.15 / w,
                        CELL_INCHES * max(len(rows), 4) / h))
    fig.colorbar(im, cax=cax, label="cosine")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def write_heatmaps(sim: np.ndarray, row_labels: list[str], col_labels: list[str], out_dir: str | Path, *,
                   rows_per_page: int = 40, max_cols: int = 30, title: str = "image x candidate cosine",
                   ) -> list[Path]:
    """Draw `sim` [n_images, n_candidates] into out_dir (replacing earlier heatmaps there); returns the
    files written, in page order."""
    sim = np.asarray(sim, dtype=np.float32)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_pages = max(1, -(-sim.shape[0] // rows_per_page))
    vmin, vmax = (float(sim.min()), float(sim.max())) if sim.size else (0.0, 1.0)
    for stale in out_dir.glob("heatmap*.png"):
        stale.unlink()
    paths = []
    for page in range(n_pages):
        start = page * rows_per_page
        block = sim[start:start + rows_per_page]
        cols = _page_columns(block, max_cols)
        path = out_dir / ("heatmap.png" if n_pages == 1 else f"heatmap_{page + 1:03d}.png")
        page_title = title if n_pages == 1 else f"{title} (images {start + 1}-{start + len(block)})"
        _draw_page(block[:, cols], row_labels[start:start + len(block)], [col_labels[c] for c in cols],
                   page_title, path, vmin, vmax)
        paths.append(path)
    return paths
