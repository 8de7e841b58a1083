"""Seconds `animatch train` loses before its first step and at each epoch boundary.

Usage: .venv/bin/python bench/train_boundaries.py [--out /tmp/bench_boundaries] [--n 600] [--epochs 4]
       [--batch-size 32] [--workers 2] [--max-eval-items 64] [--threads 1] [-- EXTRA TRAIN OPTIONS]
Trains clip-tiny on `animatch synth` data in this process and times every optimizer step. A boundary's loss is
the gap between an epoch's last step and the next epoch's first, less the median step gap; it holds the
validation (embedding --max-eval-items characters), the `best/` and `last/` writes and, before persistent
loaders, the loader workers' restart. The start is the time from calling `run_train` to the end of the first
step, less one median step. Run it on an idle machine, or compare figures of one run only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from pathlib import Path

import torch

from animatch.cli import main as animatch
from animatch.clip import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/bench_boundaries")
    parser.add_argument("--n", type=int, default=600, help="synthetic characters")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-eval-items", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("extra", nargs="*", help="more `animatch train` options (after --)")
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would bury the figures
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    root, prepared, model = out / "data", out / "prepared", out / "clip-tiny"
    if not (prepared / "train.jsonl").is_file():
        shutil.rmtree(out, ignore_errors=True)
        for command in (["synth", "--out", root, "--n", args.n, "--workers", 1],
                        ["prepare", "--data", root, "--out", prepared, "--workers", 1],
                        ["init-model", "clip-tiny", "--out", model]):
            assert animatch([str(a) for a in command]) == 0
    shutil.rmtree(out / "run", ignore_errors=True)

    ends: list[float] = []
    step = train.Trainer.step

    def timed_step(self, micro_batches, global_step=0):
        loss = step(self, micro_batches, global_step)
        ends.append(time.perf_counter())
        return loss

    train.Trainer.step = timed_step
    start = time.perf_counter()
    code = animatch([str(a) for a in ["train", "--data", root, "--split-dir", prepared, "--model", model,
                                      "--out", out / "run", "--epochs", args.epochs, "--batch-size", args.batch_size,
                                      "--workers", args.workers, "--max-eval-items", args.max_eval_items,
                                      "--report-to", "none", "--mixed-precision", "no", *args.extra]])
    total = time.perf_counter() - start
    assert code == 0, f"train failed with exit code {code}"
    per_epoch = len(ends) // args.epochs
    gaps = [b - a for a, b in zip(ends, ends[1:])]
    boundary = {e * per_epoch - 1 for e in range(1, args.epochs)}  # gap index from an epoch's last step
    median = statistics.median(g for i, g in enumerate(gaps) if i not in boundary)
    lost = [gaps[i] - median for i in sorted(boundary)]
    print(f"{len(ends)} steps ({args.epochs} epochs of {per_epoch}), median step {median * 1000:.0f} ms, "
          f"run {total:.1f} s")
    print(f"start: {ends[0] - start - median:.2f} s before the first step")
    print("epoch boundaries: " + ", ".join(f"{s:.2f}" for s in lost) + " s lost")
    print(f"boundary: {statistics.mean(lost):.2f} s lost per epoch boundary")


if __name__ == "__main__":
    main()
