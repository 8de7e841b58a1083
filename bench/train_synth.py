"""Train clip-tiny from scratch on `animatch synth` data and print retrieval before/after.

Usage: .venv/bin/python bench/train_synth.py [--out runs/bench_train] [--n 20000] [--steps 320] [--warmup-steps 80]
       [--threads 2] [--seed 42]
Prints test-split Recall@1/5/10 both ways (>= 200 candidates) before and after training, the training
throughput (samples/s) and wall times. Goal: text->image R@1 >= 0.5 within 3 minutes of training here.
Run it on an idle machine: the training loop is compute-bound. The recipe is recipes/clip-tiny-scratch.yaml
(why each value: docs/BENCHMARKS.md); any other `animatch train` option can be appended after `--`, e.g.
`-- --logit-scale-init 20 --patch-dropout 0.5`. 20,000 characters so that every pair is seen once (on 3,000 a
small CLIP memorises names instead of learning attributes).
"""

from __future__ import annotations

import json
import time

# bench/common.py (scripts run as bench/NAME.py)
from common import fresh_run, run, scratch_parser, scratch_train_args


def main() -> None:
    parser = scratch_parser(__doc__.splitlines()[0], "runs/bench_train")
    parser.add_argument("--seed", type=int, default=42, help="training seed (the data is always synth seed 0)")
    parser.add_argument("train_options", nargs="*", help="after --: more `animatch train` options")
    args = parser.parse_args()
    out = fresh_run(args)
    root, prepared, model = out / "data", out / "prepared", out / "clip-tiny"

    t0 = time.perf_counter()
    run("synth", "--out", root, "--n", args.n, "--seed", 0)
    run("prepare", "--data", root, "--out", prepared, "--val-fraction", 0.01, "--test-fraction", 0.015)
    run("init-model", "clip-tiny", "--out", model)
    t_data = time.perf_counter() - t0
    run("eval", "--data", root, "--split-dir", prepared, "--model", model, "--out", out / "eval_before")
    t_train = run("train", "--data", root, "--split-dir", prepared, "--model", model, "--out", out / "run",
                  *scratch_train_args(args), "--seed", args.seed, "--eval-every", args.steps, *args.train_options)
    run("eval", "--data", root, "--split-dir", prepared, "--model", out / "run" / "best", "--out", out / "eval_after")

    before = json.loads((out / "eval_before" / "eval.json").read_text())["model"]
    after = json.loads((out / "eval_after" / "eval.json").read_text())["model"]
    train = json.loads((out / "run" / "metrics.json").read_text())
    keys = ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10"]
    print(f"\ntest split: {after['n_characters']} characters (chance R@1 = {1 / after['n_characters']:.4f})")
    print(f"{'':8}" + "".join(f"{k:>10}" for k in keys))
    for name, m in (("before", before), ("after", after)):
        print(f"{name:8}" + "".join(f"{m['pooled'][k]:>10.3f}" for k in keys))
    for mode in ("truncated", "chunk_pooled"):
        print(f"after, {mode} texts: t2i R@1 {after[mode]['t2i_R@1']:.3f}, i2t R@1 {after[mode]['i2t_R@1']:.3f}")
    print(f"cosine gap: before {before['cosine']['cosine_gap']:.3f}, after {after['cosine']['cosine_gap']:.3f}")
    print(f"training: {train['steps']} steps in {t_train:.0f} s wall ({train['seconds']:.0f} s in the loop), "
          f"{train['samples_per_s']:.0f} samples/s; data + model setup {t_data:.0f} s")


if __name__ == "__main__":
    main()
