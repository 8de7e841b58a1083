"""The one loop that feeds (image, text) pairs to a judge in batches, shared by `animatch judge`, `judge-eval`,
the audit cascade and the web app's cascade: batches of `batch_size`, a progress bar when asked, a callback
after each batch (so a caller can write results as they come and resume after a kill), and CUDA out-of-memory
back-off (a batch that does not fit is judged one pair at a time; a single pair that does not fit becomes an
error result, so one huge image never stops a run).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from animatch.judge.judge import error_result

OOM_MESSAGE = "out of GPU memory; try a smaller --max-description-tokens or --batch-size"


def _analyze_fitting(judge: Any, pairs: Sequence[tuple[Any, str]]) -> list[dict]:
    try:
        return judge.analyze_batch(list(pairs))
    except torch.cuda.OutOfMemoryError:
        if len(pairs) == 1:
            return [error_result(OOM_MESSAGE)]
        torch.cuda.empty_cache()
        return [r for pair in pairs for r in _analyze_fitting(judge, [pair])]


def analyze_in_batches(judge: Any, pairs: Sequence[tuple[Any, str]], batch_size: int, *, desc: str | None = None,
                       on_batch: Callable[[int, list[dict]], None] | None = None) -> list[dict]:
    """The judge's results for `pairs` (image path or PIL image, text), in order. `judge` is a
    `judge.Judge` or any object with its `analyze_batch`. `desc` names a progress bar (none without it);
    `on_batch(start, results)` runs after each batch with the index of its first pair."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    results: list[dict] = []
    with tqdm(total=len(pairs), desc=desc, unit="pair", disable=desc is None or not pairs) as bar:
        for start in range(0, len(pairs), batch_size):
            batch = _analyze_fitting(judge, pairs[start:start + batch_size])
            results += batch
            if on_batch is not None:
                on_batch(start, batch)
            bar.update(len(batch))
    return results
