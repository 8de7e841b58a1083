"""What a training run sets for the whole process, shared by `train` and `judge-train`.

accelerate keeps one state per process, so each run starts from a fresh one (`fresh_accelerator`);
`--deterministic` switches the process to bit-reproducible kernels for the run and back after it
(`deterministic_mode`, `honours_deterministic`); `optimizer_step` tells whether the fp16 GradScaler skipped a
step because the gradients overflowed, so the loops can count and log it.
"""

from __future__ import annotations

import functools
import os
from contextlib import contextmanager

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState


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
