"""The judge chain of the issue, through the product's own commands and recipe files, with the before/after
table of the judge's measures (sampled and expected score).

Usage: .venv/bin/python bench/judge_train_synth.py [--out runs/bench_judge] [--n 20000] [--clip DIR]
           [--recipe recipes/judge-tiny-scratch.yaml] [--rewrite] [--eval-items 100]
synth (and prepare) -> `init-model clip-tiny` -> `train --config recipes/clip-tiny-scratch.yaml` (unless
--clip gives a trained CLIP) -> `init-model PRESET --vision-tower CLIP` (PRESET from the judge recipe's first
line) -> `judge-eval` (before) -> `judge-train --config RECIPE` -> `judge-eval` (after), on test characters
never trained on. --rewrite swaps every appearance for one written by bench/persona_rewrite.py (other words,
other sentence shapes, an attribute synth never states), so the same chain shows the judge does not lean on
how `animatch synth` words things. Goals (issue #17): verdict accuracy >= 0.80, ROC-AUC >= 0.85, unparsed
<= 5%, keyword Recall@5 >= 3x the blind guess, judge-train within 10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from common import run  # bench/common.py (scripts run as bench/NAME.py)

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
MEASURES = [("accuracy", "accuracy"), ("roc_auc", "AUC"), ("roc_auc_expected", "AUC exp"),
            ("unparsed_rate", "unparsed"), ("overlap_auc", "overlap"), ("keyword_recall", "R@5"),
            ("blind_guess_recall", "blind"),
            ("mean_score_positive", "score +"), ("mean_score_negative", "score -"),
            ("mean_expected_positive", "exp +"), ("mean_expected_negative", "exp -"), ("calibration_error", "ECE")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench_judge")
    parser.add_argument("--n", type=int, default=20000, help="synthetic characters")
    parser.add_argument("--clip", default=None, help="a trained CLIP dir (skips CLIP training)")
    parser.add_argument("--recipe", default=str(RECIPES / "judge-tiny-scratch.yaml"))
    parser.add_argument("--rewrite", action="store_true", help="reword every persona (bench/persona_rewrite.py)")
    parser.add_argument("--eval-items", type=int, default=300, help="test characters at most (2 pairs each); 300 "
                        "takes the whole test split of 20,000 (251): 502 pairs tell accuracy to about +-0.02, 200 to "
                        "+-0.03")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    root, prepared = out / "data", out / "prepared"
    preset = re.match(r"# preset: (\S+)", Path(args.recipe).read_text().splitlines()[0])[1]
    times = {"data": run("synth", "--out", out / "synth" if args.rewrite else root, "--n", args.n, "--seed", 0)}
    if args.rewrite:
        subprocess.run([sys.executable, str(Path(__file__).with_name("persona_rewrite.py")), "--data",
                        str(out / "synth"), "--out", str(root)], check=True)
    times["data"] += run("prepare", "--data", root, "--out", prepared, "--val-fraction", 0.01,
                         "--test-fraction", 0.015)
    clip = args.clip
    if clip is None:
        run("init-model", "clip-tiny", "--out", out / "clip-tiny")
        times["clip train"] = run("train", "--config", RECIPES / "clip-tiny-scratch.yaml", "--data", root,
                                  "--split-dir", prepared, "--model", out / "clip-tiny", "--out", out / "clip",
                                  "--max-eval-items", 200)
        clip = out / "clip" / "best"
    run("init-model", preset, "--out", out / "judge0", "--vision-tower", clip)
    common = ["--data", root, "--split-dir", prepared, "--max-items", args.eval_items, "--max-description-tokens",
              48, "--max-analysis-tokens", 24, "--batch-size", 25, "--no-semantic"]
    times["eval before"] = run("judge-eval", *common, "--model", out / "judge0", "--out", out / "eval_before")
    times["judge train"] = run("judge-train", "--config", args.recipe, "--data", root, "--split-dir", prepared,
                               "--model", out / "judge0", "--out", out / "run")
    method = json.loads((out / "run" / "metrics.json").read_text())["method"]
    model_args = ["--model", out / "run" / "model"] if method == "full" else \
        ["--model", out / "judge0", "--adapter", out / "run" / "adapter"]
    times["eval after"] = run("judge-eval", *common, *model_args, "--out", out / "eval_after")

    evals = {name: json.loads((out / f"eval_{name}" / "judge_eval.json").read_text()) for name in ("before", "after")}
    results = {name: e["model"]["overall"] for name, e in evals.items()}
    print(f"\n{results['after']['pairs']} balanced test pairs ({evals['after']['characters']} unseen characters"
          f"{', reworded personas' if args.rewrite else ''}), two-stage judge; exp = expected score")
    print(f"{'':8}" + "".join(f"{label:>10}" for _, label in MEASURES))
    for name, m in results.items():
        print(f"{name:8}" + "".join(f"{m[k]:>10.3f}" if m.get(k) is not None else f"{'n/a':>10}"
                                    for k, _ in MEASURES))
    m = results["after"]
    ratio = m["keyword_recall"] / m["blind_guess_recall"] if m["blind_guess_recall"] else float("nan")
    print(f"goals: accuracy {m['accuracy']:.3f} (>= 0.80), ROC-AUC {m['roc_auc'] or 0:.3f} / expected "
          f"{m['roc_auc_expected'] or 0:.3f} (>= 0.85), unparsed {m['unparsed_rate']:.3f} (<= 0.05), Recall@5 "
          f"{ratio:.2f}x the blind guess (>= 3), judge-train {times['judge train']:.0f} s (<= 600)")
    print("wall times: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))


if __name__ == "__main__":
    main()
