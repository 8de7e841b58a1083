"""What the bench scripts share: running an `animatch` subcommand in-process, timed, stopping on failure, and
the short from-scratch training recipe of the synthetic benches."""

from __future__ import annotations

import time

from animatch.cli import main as animatch


def run(*args: object) -> float:
    """Run `animatch ARGS...`; returns its wall seconds, exits with a message if it fails."""
    start = time.perf_counter()
    code = animatch([str(a) for a in args])
    if code:
        raise SystemExit(f"animatch {args[0]} failed with exit code {code}")
    return time.perf_counter() - start


# `animatch train` options for clip-tiny from scratch on a synthetic set seen once (docs/BENCHMARKS.md): on
# 3,000 characters a small CLIP memorises names; on 20,000 every pair is new and it learns the attributes.
SCRATCH_RECIPE = ("--lr", 1e-3, "--warmup-steps", 20, "--lr-schedule", "wsd", "--logit-scale-init", 20,
                  "--crop-scale", 1.0, "--no-hflip", "--workers", 1, "--report-to", "none")
