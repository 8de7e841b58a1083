"""Train clip-tiny from scratch on `animatch synth` data and print retrieval before/after.

Usage: .venv/bin/python bench/train_synth.py [--out runs/bench_train] [--n 3000] [--steps 600]
Prints test-split Recall@1/5/10 both ways (>= 200 candidates) before and after training, the training
throughput (samples/s) and wall times. Goal: text->image R@1 >= 0.5 within 3 minutes of training here.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from common import run  # bench/common.py (scripts run as bench/NAME.py)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench_train")
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    root, prepared, model = out / "data", out / "prepared", out / "clip-tiny"

    t0 = time.perf_counter()
    run("synth", "--out", root, "--n", args.n, "--seed", 0)
    run("prepare", "--data", root, "--out", prepared, "--val-fraction", 0.03, "--test-fraction", 0.1)
    run("init-model", "clip-tiny", "--out", model)
    t_data = time.perf_counter() - t0
    run("eval", "--data", root, "--split-dir", prepared, "--model", model, "--out", out / "eval_before")
    t1 = time.perf_counter()
    run("train", "--data", root, "--split-dir", prepared, "--model", model, "--out", out / "run",
        "--max-steps", args.steps, "--batch-size", args.batch_size, "--lr", 1e-3, "--warmup-steps", 20,
        "--eval-every", max(args.steps // 3, 1), "--report-to", "none", "--max-eval-items", 200)
    t_train = time.perf_counter() - t1
    run("eval", "--data", root, "--split-dir", prepared, "--model", out / "run" / "best", "--out", out / "eval_after")

    before = json.loads((out / "eval_before" / "eval.json").read_text())["model"]
    after = json.loads((out / "eval_after" / "eval.json").read_text())["model"]
    train = json.loads((out / "run" / "metrics.json").read_text())
    keys = ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10"]
    print(f"\ntest split: {after['n_characters']} characters (chance R@1 = {1 / after['n_characters']:.4f})")
    print(f"{'':8}" + "".join(f"{k:>10}" for k in keys))
    for name, m in (("before", before), ("after", after)):
        print(f"{name:8}" + "".join(f"{m['pooled'][k]:>10.3f}" for k in keys))
    print(f"cosine gap: before {before['cosine']['cosine_gap']:.3f}, after {after['cosine']['cosine_gap']:.3f}")
    print(f"training: {train['steps']} steps in {t_train:.0f} s wall ({train['seconds']:.0f} s in the loop), "
          f"{train['samples_per_s']:.0f} samples/s; data + model setup {t_data:.0f} s")


if __name__ == "__main__":
    main()
