"""What a training run sets for the whole process, and its metrics log; shared by `train` and `judge-train`.

accelerate keeps one state per process, so each run starts from a fresh one (`fresh_accelerator`) at the
precision `resolve_mixed_precision` picks; `--deterministic` switches the process to bit-reproducible
kernels for the run and back after it (`deterministic_mode`, `honours_deterministic`); `adamw` is the
optimizer both train, with the fused kernel where torch has one; `optimizer_step` tells whether the fp16
GradScaler skipped a step because the gradients overflowed, so the loops can count it.
Metrics go to `metrics.jsonl` and the `--report-to` trackers (`log_metrics`); a resumed run first cuts the
log back to its checkpoint's step (`cut_metrics`), so the steps it redoes appear once.
"""

from __future__ import annotations

import functools
import json
import os
from contextlib import contextmanager
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState

from animatch.runs import atomic_write_text


def fresh_accelerator(**kwargs) -> Accelerator:
    """An Accelerator configured by this run alone. accelerate keeps one state per process and refuses a second
    Accelerator with another precision or device ("AcceleratorState has already been initialized"), which a
    second in-process run (the demo, tests, a notebook) would hit; a run owns the process while it runs, so
    it starts from a clean state. Under `accelerate launch` the process group (PartialState) is kept."""
    AcceleratorState._reset_state(reset_partial_state=not torch.distributed.is_initialized())
    GradientState._reset_state()
    return Accelerator(**kwargs)


@contextmanager
def deterministic_mode(enabled: bool):
    """`--deterministic`: the same inputs give bit-identical results on CUDA too (on CPU they already do), so a
    killed and resumed run equals an uninterrupted one. Deterministic kernels (an error names any op without
    one), a fixed cuBLAS workspace, no TF32, the math attention kernel. Its cost is in docs/BENCHMARKS.md.
    Process-wide switches, so they are restored on exit."""
    if not enabled:
        yield
        return
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
             torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[4] or ":4096:8"
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
            yield
    finally:
        torch.use_deterministic_algorithms(saved[0])
        torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = \
            saved[1:4]
        if saved[4] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def resolve_mixed_precision(choice: str) -> str:
    """`--mixed-precision auto`: bf16 on a GPU that has it, else fp16 on a GPU, else none (CPU)."""
    if choice != "auto":
        return choice
    if not torch.cuda.is_available():
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def adamw(param_groups: list[dict], device: torch.device, **kwargs) -> torch.optim.AdamW:
    """AdamW updating all tensors in one fused pass where torch has the kernel (CPU, CUDA): on two CPU cores
    3 ms a step instead of 22 for clip-tiny, 15 ms instead of 98 for llava-minilm (a sixth of its step)."""
    return torch.optim.AdamW(param_groups, fused=True if device.type in ("cpu", "cuda") else None, **kwargs)


def optimizer_step(acc: Accelerator, optimizer) -> bool:
    """`optimizer.step()`; True when the fp16 GradScaler skipped it because the gradients overflowed. Read from
    the scale, which the scaler then lowers: accelerate's `step_was_skipped` misses the skip of a fused optimizer
    (the scaler always calls it, and its kernel skips the update)."""
    scale = acc.scaler.get_scale() if acc.scaler is not None else None
    optimizer.step()
    return scale is not None and acc.scaler.get_scale() < scale


def honours_deterministic(run):
    """Run `run(cfg)` under `deterministic_mode(cfg.deterministic)`."""
    @functools.wraps(run)
    def wrapper(cfg):
        with deterministic_mode(cfg.deterministic):
            return run(cfg)
    return wrapper


def log_metrics(acc: Accelerator, path: Path, row: dict) -> None:
    """Append `row` (which has "step") to `path` on the main process; its numbers go to the trackers."""
    if acc.is_main_process:
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
    acc.log({k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}, step=row["step"])


def cut_metrics(path: str | os.PathLike, last_step: int | None) -> None:
    """Keep the rows of a metrics JSONL up to `last_step`, the step of the checkpoint a resumed run restarts
    from, so that the steps it redoes are logged once; None (a fresh run) removes them all."""
    path = Path(path)
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a line cut short by the kill
            continue
        if last_step is not None and isinstance(row, dict) and isinstance(row.get("step"), int) \
                and row["step"] <= last_step:
            kept.append(line + "\n")
    atomic_write_text(path, "".join(kept))
