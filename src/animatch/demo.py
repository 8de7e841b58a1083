"""`animatch demo`: the whole pipeline on the embedded synthetic dataset, offline, with real learning.

synth -> prepare -> clip-tiny untrained eval -> train (recipes/clip-tiny-scratch.yaml, shortened) -> eval
(before/after table) -> match a folder of held-out images, each named after its character, against their
descriptions (the heatmap of the README: right answers on the diagonal) -> index + two searches -> the judge
recipe's preset (recipes/judge-tiny-scratch.yaml) on the trained vision tower: judge-train by that recipe, one
judge result, judge-eval -> `REPORT.md` linking every artefact. Every step calls the same job function as its CLI
subcommand (through `animatch.cli.main`), so the demo is also an end-to-end check of the commands users run.
`--quick` shrinks data and steps (the judge's too) for the CI smoke test (within 90 s here).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import yaml

from animatch.config import DemoConfig
from animatch.errors import UserError
from animatch.runs import atomic_write_text, claim_output, markdown_table

# (characters, CLIP steps, CLIP batch, judge steps, judge-eval characters) per mode; sized for 2 CPU cores. The
# full run sees each CLIP training pair about once, as its recipe wants (a small CLIP memorises names otherwise),
# and trains the judge by its recipe as written (judge steps None): a shorter run stops before stage 2 judges.
SIZES = {"full": (16000, 280, 64, None, 50), "quick": (600, 70, 48, 12, 4)}
QUICK_OWN = 16  # characters the quick judge describes for its phase on its own descriptions
# (validation fraction, test fraction, held-out images matched) per mode: about 240 test characters in full.
SPLITS = {"full": (0.01, 0.015, 20), "quick": (0.05, 0.1, 12)}
CLIP_RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "clip-tiny-scratch.yaml"
JUDGE_RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "judge-tiny-scratch.yaml"
RECALLS = ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10")


class Steps:
    """Runs `animatch` subcommands, timing each and stopping at the first failure."""

    def __init__(self):
        self.timings: list[tuple[str, float]] = []

    def __call__(self, title: str, *args) -> None:
        from animatch.cli import main

        print(f"\n=== {title}: animatch {' '.join(map(str, args))}", flush=True)
        start = time.perf_counter()
        code = main([str(a) for a in args])
        self.timings.append((title, time.perf_counter() - start))
        if code:
            raise UserError(f"demo step '{title}' failed (exit code {code})")


def _eval_row(name: str, path: Path) -> dict:
    m = json.loads(path.read_text())["model"]
    return {"model": name, "accuracy": m["accuracy"], **{k: m["pooled"][k] for k in RECALLS},
            "cosine gap": m["cosine"]["cosine_gap"], "BLEU": m["bleu"], "ROUGE-L": m["rouge_l"]}


def _heldout_folder(split_dir: Path, root: Path, out: Path, n: int) -> tuple[Path, Path]:
    """Copy the first `n` test images into a plain folder, each named after its character as a user would name
    them, and write those characters' records as the candidates; returns (folder, candidates file)."""
    folder = out / "heldout_images"
    folder.mkdir(parents=True, exist_ok=True)
    lines = (split_dir / "test.jsonl").read_text().splitlines()[:n]
    for line in lines:
        record = json.loads(line)
        shutil.copyfile(root / record["file_name"], folder / f"{record['character'].replace(' ', '_')}.png")
    candidates = out / "heldout_characters.jsonl"
    atomic_write_text(candidates, "".join(line + "\n" for line in lines))
    return folder, candidates


def _queries(split_dir: Path) -> list[str]:
    from animatch.data.synth_text import query_text

    first = json.loads((split_dir / "test.jsonl").read_text().splitlines()[0])
    return [query_text(first["attributes"]), "a girl with silver hair and twin tails wearing glasses"]


def run_demo(cfg: DemoConfig) -> int:
    out = claim_output(cfg, "demo", replace=True)
    n, clip_steps, batch, judge_steps, judge_items = SIZES["quick" if cfg.quick else "full"]
    val_fraction, test_fraction, n_heldout = SPLITS["quick" if cfg.quick else "full"]
    if not CLIP_RECIPE.is_file():
        raise UserError(f"the demo trains with {CLIP_RECIPE.name} from the project's recipes/ folder, not found at "
                        f"{CLIP_RECIPE.parent}: run it from a source checkout (`make demo`)")
    if not JUDGE_RECIPE.is_file():
        raise UserError(f"the demo's judge trains with {JUDGE_RECIPE.name} from the project's recipes/ folder, not "
                        f"found at {JUDGE_RECIPE.parent}: run it from a source checkout (`make demo`)")
    root, prep, clip0, run = out / "data", out / "prepared", out / "clip-tiny", out / "clip-run"
    llava0, judge_run = out / "judge0", out / "judge-run"
    step = Steps()
    started = time.perf_counter()

    step("1a. synthetic dataset", "synth", "--out", root, "--n", n, "--seed", cfg.seed)
    step("1b. prepare", "prepare", "--data", root, "--out", prep, "--val-fraction", val_fraction,
         "--test-fraction", test_fraction)
    step("2a. untrained clip-tiny", "init-model", "clip-tiny", "--out", clip0, "--seed", cfg.seed)
    step("2b. eval before training", "eval", "--data", root, "--split-dir", prep, "--model", clip0,
         "--out", out / "eval_before", "--workers", 0)
    step("2c. train", "train", "--config", CLIP_RECIPE, "--data", root, "--split-dir", prep, "--model", clip0,
         "--out", run, "--max-steps", clip_steps, "--batch-size", batch, "--warmup-steps", clip_steps // 4,
         "--report-to", "tensorboard", "--seed", cfg.seed)
    step("2d. eval after training", "eval", "--data", root, "--split-dir", prep, "--model", run / "best",
         "--baseline", clip0, "--out", out / "eval_after", "--workers", 0)
    table = markdown_table([_eval_row("untrained", out / "eval_before" / "eval.json"),
                            _eval_row("trained", out / "eval_after" / "eval.json")], floatfmt=".3f")
    print("\nBefore / after training (test split, chunk-pooled appearance texts):\n" + table)

    heldout, heldout_characters = _heldout_folder(prep, root, out, n_heldout)
    step("3. match held-out images", "match", "--images", heldout, "--model", run / "best",
         "--metadata", heldout_characters, "--out", out / "match", "--workers", 0,
         "--cache-dir", out / "embedding_cache")
    step("4a. index", "index", "--data", root, "--split-dir", prep, "--split", "test", "--model", run / "best",
         "--out", out / "index", "--workers", 0, "--cache-dir", out / "embedding_cache")
    for i, query in enumerate(_queries(prep)):
        step(f"4{'bc'[i]}. search", "search", out / "index", query, "--k", 5)

    # The judge recipe; shortened (--quick) with its phases in proportion, describing a few characters for the
    # phase on its own descriptions.
    recipe_text = JUDGE_RECIPE.read_text()
    preset = recipe_text.splitlines()[0].removeprefix("# preset:").strip()
    recipe = yaml.safe_load(recipe_text)
    shortened = () if judge_steps is None else ("--max-steps", judge_steps, "--own-descriptions", QUICK_OWN, *[
        arg for name in ("describe_steps", "context_noise_from", "own_context_from") if recipe.get(name)
        for arg in (f"--{name.replace('_', '-')}", judge_steps * recipe[name] // recipe["max_steps"])])
    step("5a. the judge on the trained vision tower", "init-model", preset, "--out", llava0,
         "--vision-tower", run / "best", "--seed", cfg.seed)
    step("5b. judge-train", "judge-train", "--config", JUDGE_RECIPE, "--data", root, "--split-dir", prep,
         "--model", llava0, "--out", judge_run, *shortened, "--seed", cfg.seed)
    example = json.loads((prep / "test.jsonl").read_text().splitlines()[0])
    short = ("--max-description-tokens", 48, "--max-analysis-tokens", 24)
    step("5c. judge one pair", "judge", "--model", judge_run / "model", "--image", root / example["file_name"],
         "--text", example["appearance"], *short)
    step("5d. judge-eval", "judge-eval", "--data", root, "--split-dir", prep, "--model", judge_run / "model",
         "--baseline", llava0, "--out", out / "judge_eval", "--max-items", judge_items, "--no-semantic", *short)

    total = time.perf_counter() - started
    _write_report(out, table, step.timings, total)
    print(f"\ndemo finished in {total:.0f} s; report: {out / 'REPORT.md'}")
    return 0


def _write_report(out: Path, table: str, timings: list[tuple[str, float]], total: float) -> None:
    timing_rows = [{"step": title, "seconds": seconds} for title, seconds in timings]
    # The judge-eval report links its files relative to its own dir; re-root them under judge_eval/.
    judge_md = re.sub(r"\]\((?!https?:|/)([^)]+)\)", r"](judge_eval/\1)",
                      re.sub(r"(?m)^# ", "### ", (out / "judge_eval" / "judge_eval.md").read_text()))
    report = f"""# animatch demo

Everything below ran offline on synthetic data in {total:.0f} s.

## CLIP: before / after training (test split)

{table}

Evaluation reports: [before](eval_before/eval.md), [after, with the untrained model as baseline](eval_after/eval.md).

![recall](eval_after/recall_at_k.png)
![similarities](eval_after/similarity_hist.png)

## Matching a folder of held-out images

Test images the model never saw, each named after its character, matched against those characters'
appearance texts: the true character is on the diagonal; a green box is a right best match, a red one a
wrong best match, a dashed white one the true character it missed.

[matches.csv](match/matches.csv), [matches.jsonl](match/matches.jsonl), [summary](match/report.md)

![heatmap](match/heatmap.png)

## Search index

Index in [index/](index/); the demo's queries and their results are printed in the demo's output.

## LLaVA judge

Fine-tuning run: [judge-run/](judge-run/report.md) (recipe `recipes/judge-tiny-scratch.yaml` as written; `--quick`
shortens it). "mean score +/-" are the mean scores the judge gave true and false descriptions of test characters it
never saw; "mean expected" the same for the expected score (its probabilities over the scores).

{judge_md}

## Timings

{markdown_table(timing_rows, floatfmt='.1f')}

Artefacts: [dataset](data/), [prepare report](prepared/prepare_report.md), [training run](clip-run/report.md).
"""
    atomic_write_text(out / "REPORT.md", report)
