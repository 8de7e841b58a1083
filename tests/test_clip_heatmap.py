"""Heatmaps a person can read: true candidates on the diagonal and marked, best matches marked in the colour that
says right or wrong, whole labels, numbers in cells, a colour scale fitted to the data, and a small page drawn as
large as a big one's cells allow (checked on the figure and on the pixels of the PNG)."""

import io

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_rgb
from PIL import Image

from animatch.clip import heatmap
from animatch.clip.heatmap import _page_columns, draw_page, write_heatmaps


def _png(fig) -> Image.Image:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=heatmap.DPI)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _pixel(fig, image: Image.Image, x: float, y: float) -> tuple[int, int, int]:
    """The PNG's colour at data point (x, y) of the heatmap Axes."""
    px, py = fig.axes[0].transData.transform((x, y))
    return image.getpixel((round(px), round(image.height - py)))


def _near(rgb, color: str, tol: int = 40) -> bool:
    return all(abs(a - round(255 * b)) <= tol for a, b in zip(rgb, to_rgb(color)))


def test_true_candidates_come_first_in_row_order_then_best_matches():
    rng = np.random.default_rng(0)
    block = rng.normal(size=(3, 10))
    block[0, 9] = block[1, 9] = block[2, 4] = 5  # rows 0 and 1 prefer 9, row 2 prefers 4
    assert _page_columns(block, [7, 2, None], 4) == [7, 2, 4, 9]
    assert _page_columns(block, [None] * 3, 2) == [4, 9]
    assert _page_columns(block, [7, 2, 5], 30) == [7, 2, 5, 0, 1, 3, 4, 6, 8, 9]  # all fit: the rest in order


def test_marks_colour_a_right_best_green_a_wrong_best_red_and_the_missed_truth_dashed_white():
    sim = np.full((4, 4), 0.1, dtype=np.float32) + np.eye(4, dtype=np.float32) * 0.5
    sim[3, 1] = 0.9  # image 3 prefers candidate 1: wrong
    labels = [f"Character {i} (A Title Longer Than 30 Characters)" for i in range(4)]
    fig = draw_page(sim, [f"Character_{i}.png" for i in range(4)], labels, truth=[0, 1, 2, 3], title="t")
    image = _png(fig)
    ax, colorbar = fig.axes
    assert ax.get_xlim() == (-0.5, 3.5) and ax.get_ylim() == (3.5, -0.5)
    assert colorbar.get_ylim() == pytest.approx((0.1, 0.9))  # scaled to the data, not to -1..1
    assert [t.get_text() for t in ax.get_xticklabels()] == labels  # whole labels, not cut at ~30 characters
    numbers = [t for t in ax.texts]
    assert len(numbers) == 16 and min(t.get_fontsize() for t in numbers) >= 7
    for r in (1, 2):  # right: green box edges on the diagonal (left edges between cells, off the frame)
        assert _near(_pixel(fig, image, r - 0.5, r), heatmap.RIGHT_COLOR), r
    assert _near(_pixel(fig, image, 1 - 0.5, 3), heatmap.WRONG_COLOR)  # wrong best of row 3
    missed_edge = [_pixel(fig, image, 3 - 0.42, y) for y in np.linspace(2.7, 3.3, 13)]  # dashed: some are gaps
    assert sum(_near(rgb, heatmap.TRUE_COLOR) for rgb in missed_edge) >= 4
    assert not any(_near(_pixel(fig, image, c - 0.42, 1), heatmap.TRUE_COLOR) for c in (0, 2, 3))
    assert "(3 of 4 images)" in " ".join(t.get_text() for t in fig.texts)
    plt.close(fig)


def test_a_page_of_three_candidates_is_not_a_strip_in_white_space():
    fig = draw_page(np.array([[0.2, 0.3, 0.1], [0.4, 0.1, 0.25]]), ["a.png", "b.png"],
                    ["red hair", "blue twin tails", "silver hair, green eyes"], title="t")
    x0, y0, w, h = fig.axes[0].get_position().bounds
    cell_in = w * fig.get_figwidth() / 3
    assert cell_in >= 0.8 and w * h >= 0.15  # large cells; the grid is a good part of the picture
    assert min(t.get_fontsize() for t in fig.axes[0].texts) >= 9
    plt.close(fig)


def test_pages_keep_each_rows_truth_and_best_when_candidates_outnumber_the_columns(tmp_path):
    rng = np.random.default_rng(1)
    sim = rng.normal(size=(25, 60)).astype(np.float32)
    paths = write_heatmaps(sim, [f"i{n}" for n in range(25)], [f"c{n}" for n in range(60)], tmp_path,
                           truth=list(range(25)), max_cols=20)
    assert [p.name for p in paths] == [f"heatmap_{n:03d}.png" for n in (1, 2, 3)]  # 10 images a page
    for n in range(3):
        block = sim[10 * n:10 * n + 10]
        assert _page_columns(block, list(range(10 * n, 10 * n + len(block))), 20)[:len(block)] == \
            list(range(10 * n, 10 * n + len(block)))
    assert all(Image.open(p).width > 600 for p in paths)
