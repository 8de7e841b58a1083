"""Fine-tune llava-tiny on synthetic data with `animatch judge-train` and print the judge's four measures
before and after.

Usage: .venv/bin/python bench/judge_train_synth.py [--out runs/bench_judge] [--n 900] [--clip DIR]
           [--clip-steps 150] [--steps 900] [--method full] [--batch-size 8] [--lr 2e-3] [--projector-lr 1e-2]
           [--description-examples 6] [--eval-items 40]
Builds a synthetic dataset, trains clip-tiny on it with `animatch train` (unless --clip gives a trained CLIP),
builds llava-tiny with that vision tower, evaluates it with `animatch judge-eval` (balanced test pairs in the
two-stage format: stage 2 sees the model's own description), fine-tunes it with `animatch judge-train` and
evaluates again. The default method is `full`: llava-tiny's language model is random, so there is no
pretrained knowledge for LoRA to preserve. Texts are kept short (48-token descriptions and candidates) and
descriptions outnumber stage-2 examples, since stage 2 can only compare once stage 1 looks at the image.
Goals: keyword Recall@5 >= 3x the blind guess; verdict accuracy >= 0.75. Budget: at most 10 minutes on 2 CPU
cores. Runs single-threaded: on a shared 2-core machine two torch threads per process ran 7x slower here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from common import run  # bench/common.py (scripts run as bench/NAME.py)

MEASURES = [("accuracy", "accuracy"), ("roc_auc", "ROC-AUC"), ("unparsed_rate", "unparsed"),
            ("keyword_recall", "Recall@5"), ("blind_guess_recall", "blind"), ("bleu", "BLEU-4"),
            ("rouge_l", "ROUGE-L"), ("semantic_cosine", "cosine")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench_judge")
    parser.add_argument("--n", type=int, default=900, help="synthetic characters")
    parser.add_argument("--clip", default=None, help="a trained CLIP dir (skips CLIP training)")
    parser.add_argument("--clip-steps", type=int, default=150)
    parser.add_argument("--steps", type=int, default=900, help="judge-train optimizer steps")
    parser.add_argument("--method", default="full", choices=("lora", "full"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--projector-lr", type=float, default=1e-2)
    parser.add_argument("--description-examples", type=int, default=6, help="per character per epoch")
    parser.add_argument("--eval-items", type=int, default=40, help="test characters (2 pairs each)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    root, prepared = out / "data", out / "prepared"
    times = {}

    times["data"] = run("synth", "--out", root, "--n", args.n, "--image-size", 64, "--seed", 0)
    times["data"] += run("prepare", "--data", root, "--out", prepared, "--val-fraction", 0.03,
                         "--test-fraction", 0.08)
    clip = args.clip
    if clip is None:
        run("init-model", "clip-tiny", "--out", out / "clip-tiny")
        times["clip train"] = run("train", "--data", root, "--split-dir", prepared, "--model", out / "clip-tiny",
                                  "--out", out / "clip", "--max-steps", args.clip_steps, "--batch-size", 64,
                                  "--lr", 1e-3, "--warmup-steps", 10, "--report-to", "none", "--max-eval-items", 100,
                                  "--eval-every", args.clip_steps, "--workers", 0)
        clip = out / "clip" / "best"
    run("init-model", "llava-tiny", "--out", out / "llava-tiny", "--vision-tower", clip)

    common = ["--data", root, "--split-dir", prepared, "--max-items", args.eval_items, "--max-description-tokens",
              64, "--max-analysis-tokens", 24, "--batch-size", 16, "--candidate-tokens", 48]
    times["eval before"] = run("judge-eval", *common, "--model", out / "llava-tiny", "--out", out / "eval_before")
    times["judge train"] = run(
        "judge-train", "--data", root, "--split-dir", prepared, "--model", out / "llava-tiny", "--out", out / "run",
        "--method", args.method, "--max-steps", args.steps, "--batch-size", args.batch_size, "--accum-steps", 1,
        "--lr", args.lr, "--projector-lr", args.projector_lr, "--warmup-ratio", 0.03, "--description-tokens", 48,
        "--candidate-tokens", 48, "--description-examples", args.description_examples, "--personality-negatives", 0,
        "--workers", 0, "--report-to", "none", "--max-eval-examples", 40, "--log-every", 100)
    after = out / "run" / ("model" if args.method == "full" else "adapter")
    model_args = ["--model", after] if args.method == "full" else ["--model", out / "llava-tiny", "--adapter", after]
    times["eval after"] = run("judge-eval", *common, *model_args, "--out", out / "eval_after")

    results = {name: json.loads((out / name / "judge_eval.json").read_text())["model"]["overall"]
               for name in ("eval_before", "eval_after")}
    print(f"\n{results['eval_after']['pairs']} balanced test pairs ({args.eval_items} characters), two-stage judge")
    print(f"{'':8}" + "".join(f"{label:>10}" for _, label in MEASURES))
    for name, m in results.items():
        print(f"{name[5:]:8}" + "".join(f"{m[k]:>10.3f}" if m[k] is not None else f"{'n/a':>10}"
                                        for k, _ in MEASURES))
    m = results["eval_after"]
    ratio = m["keyword_recall"] / m["blind_guess_recall"] if m["blind_guess_recall"] else float("nan")
    print(f"Recall@5 / blind guess after: {ratio:.2f}x (goal >= 3); verdict accuracy {m['accuracy']:.3f} "
          f"(goal >= 0.75)")
    print("wall times: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))


if __name__ == "__main__":
    main()
