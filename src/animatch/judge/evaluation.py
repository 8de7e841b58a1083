"""`animatch judge-eval`: the reference project's four measures of the two-stage judge, on split pairs.

Pairs: each character of the split is one positive (its image, its own appearance) and one negative (its
image, another character's appearance, from the same title when its group has one): balanced. Texts are the
appearance cut to whole sentences within `candidate_tokens` tokens, as `judge-train` makes candidates. With
`--groups N` the characters are shuffled (seeded) into N groups and negatives are drawn inside a group (the
reference "divided the dataset and reference texts into multiple groups"); every figure is given per group
and overall (pooled over all pairs). Measures, each from `Judge.analyze_batch` results:
1. verdict accuracy (score >= threshold against the truth; an unparsed or failed pair counts as wrong),
   ROC-AUC of the sampled score and of the expected score (`judge.scores`, the model's confidence) over
   the pairs that have one (`evaluate.classification`), unparsed rate, and the verdict's reliability: the
   model's probability of a match against how often such pairs truly match (calibration error, plot);
2. keyword Recall@K of the stage-1 description against the reference appearance (`evaluate.keywords`), next to
   the blind-guess baseline: another character's reference appearance in place of the description, averaged
   over the other characters of the group (at most BLIND_SAMPLE of them); and the overlap AUC, the ROC-AUC of
   `keyword_overlap` (the candidate's keywords the description names) over the pairs: what stage 1's
   descriptions allow a comparison that learns nothing, beside what stage 2 makes of them;
3. BLEU-4 (corpus) and ROUGE-L F1 (mean) of the descriptions against the references;
4. mean semantic cosine of description and reference (sentence-transformers).
Description measures take one description per image (its positive pair's). Writes judge_eval.json,
judge_eval.md, score_hist.png (sampled and expected scores, positives vs negatives), reliability.png and
pairs_<role>.jsonl; `--baseline` adds a second
model side by side.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from animatch.config import JudgeEvalConfig
from animatch.data.safepath import paths_inside
from animatch.data.schema import load_split
from animatch.errors import UserError
from animatch.evaluate.classification import roc_auc, threshold_accuracy
from animatch.evaluate.keywords import keyword_overlap, keyword_recall_at_k
from animatch.evaluate.text import bleu, rouge_l_scores, semantic_cosine
from animatch.judge.batching import analyze_in_batches
from animatch.judge.data import join_within, split_sentences
from animatch.judge.judge import Judge
from animatch.runs import atomic_write_text, claim_output, markdown_table, write_json, write_run_files

BLIND_SAMPLE = 50
RELIABILITY_BINS = 10


def build_pairs(records: list[dict], groups: int, seed: int) -> list[dict]:
    """Balanced pairs {"group", "record", "text_of", "label"}: a positive and a negative per character."""
    if len(records) < 2 * groups:
        raise UserError(f"{len(records)} characters cannot make {groups} group(s) of at least 2 (a negative "
                        "needs another character): lower --groups or raise --max-items")
    rng = random.Random(seed)
    order = list(range(len(records)))
    rng.shuffle(order)
    pairs = []
    for g in range(groups):
        members = sorted(order[g::groups])
        by_title = defaultdict(list)
        for i in members:
            by_title[records[i]["title"]].append(i)
        for i in members:
            same = [j for j in by_title[records[i]["title"]] if j != i]
            other = rng.choice(same or [j for j in members if j != i])
            pairs += [{"group": g, "record": i, "text_of": i, "label": True},
                      {"group": g, "record": i, "text_of": other, "label": False}]
    return pairs


def blind_guess(records: list[dict], pairs: list[dict], k: int, seed: int) -> dict[int, float]:
    """Per character: mean keyword Recall@K of other characters' references (of its group) against its own."""
    rng = random.Random(seed)
    members = defaultdict(list)
    for p in pairs:
        if p["label"]:
            members[p["group"]].append(p["record"])
    blind = {}
    for group in members.values():
        for i in group:
            others = [j for j in group if j != i]
            others = rng.sample(others, min(BLIND_SAMPLE, len(others)))
            scores = [keyword_recall_at_k(records[j]["appearance"], records[i]["appearance"], k) for j in others]
            scores = [s for s in scores if s is not None]
            if scores:
                blind[i] = sum(scores) / len(scores)
    return blind


def judge_pairs(judge: Judge, pairs: list[dict], records: list[dict], texts: dict[int, str], root: Path,
                batch_size: int, desc: str) -> list[dict]:
    return analyze_in_batches(judge, [(root / records[p["record"]]["file_name"], texts[p["text_of"]]) for p in pairs],
                              batch_size, desc=desc)


def _mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def judge_measures(pairs: list[dict], outputs: list[dict], per_record: dict[int, dict], blind: dict[int, float],
                   threshold: float) -> dict:
    """The four measures over `pairs` (and their outputs); `per_record` holds each description's scores."""
    labels = [p["label"] for p in pairs]
    scores = [o["score"] for o in outputs]
    scored = [(s, y) for s, y in zip(scores, labels) if s is not None]
    expected = [(o.get("score_expected"), y) for o, y in zip(outputs, labels) if o.get("score_expected") is not None]
    confidence = [(o["match_probability"], y) for o, y in zip(outputs, labels)
                  if o.get("match_probability") is not None]
    described = [p["record"] for p in pairs if p["label"] and p["record"] in per_record]
    rows = [per_record[i] for i in described]
    recalls = [r["recall"] for r in rows if r["recall"] is not None]
    blinds = [blind[i] for i in described if i in blind and per_record[i]["recall"] is not None]
    overlaps = [(o["keyword_overlap"], y) for o, y in zip(outputs, labels) if o.get("keyword_overlap") is not None]
    return {
        "pairs": len(pairs), "positives": sum(labels),
        "accuracy": threshold_accuracy(scores, labels, threshold),
        "roc_auc": roc_auc([s for s, _ in scored], [y for _, y in scored]) if scored else None,
        "unparsed_rate": sum(o["status"] == "unparsed" for o in outputs) / len(pairs),
        "error_rate": sum(o["status"] == "error" for o in outputs) / len(pairs),
        "mean_score_positive": _mean([s for s, y in scored if y]),
        "mean_score_negative": _mean([s for s, y in scored if not y]),
        "roc_auc_expected": roc_auc([s for s, _ in expected], [y for _, y in expected]) if expected else None,
        "mean_expected_positive": _mean([s for s, y in expected if y]),
        "mean_expected_negative": _mean([s for s, y in expected if not y]),
        "calibration_error": calibration_error(confidence),
        "overlap_auc": roc_auc([s for s, _ in overlaps], [y for _, y in overlaps]) if overlaps else None,
        "descriptions": len(rows), "keyword_recall": _mean(recalls), "blind_guess_recall": _mean(blinds),
        "bleu": bleu([r["description"] for r in rows], [r["reference"] for r in rows]) if rows else None,
        "rouge_l": _mean([r["rouge_l"] for r in rows]),
        "semantic_cosine": _mean([r["cosine"] for r in rows if r["cosine"] is not None]),
    }


def reliability_bins(confidence: list[tuple[float, bool]]) -> list[dict]:
    """The verdict's reliability: pairs binned by the model's match probability (RELIABILITY_BINS equal
    bins), each with its mean probability, the fraction that truly match, and its size."""
    bins: list[list[tuple[float, bool]]] = [[] for _ in range(RELIABILITY_BINS)]
    for p, y in confidence:
        bins[min(int(p * RELIABILITY_BINS), RELIABILITY_BINS - 1)].append((p, y))
    return [{"predicted": _mean([p for p, _ in b]), "observed": _mean([float(y) for _, y in b]), "pairs": len(b)}
            for b in bins if b]


def calibration_error(confidence: list[tuple[float, bool]]) -> float | None:
    """Expected calibration error of the match probability: the pair-weighted mean |predicted - observed|."""
    if not confidence:
        return None
    return sum(b["pairs"] * abs(b["predicted"] - b["observed"]) for b in reliability_bins(confidence)) / \
        len(confidence)


def evaluate(judge: Judge, role: str, pairs: list[dict], records: list[dict], texts: dict[int, str],
             blind: dict[int, float], cfg: JudgeEvalConfig) -> tuple[dict, list[dict]]:
    """(overall and per-group measures, per-pair rows) of one judge."""
    start = time.perf_counter()
    outputs = judge_pairs(judge, pairs, records, texts, Path(cfg.data), cfg.batch_size, f"judge-eval {role}")
    for p, o in zip(pairs, outputs):
        o["keyword_overlap"] = None if o["description"] is None else keyword_overlap(o["description"],
                                                                                     texts[p["text_of"]])
    per_record = {p["record"]: {"description": o["description"], "reference": records[p["record"]]["appearance"]}
                  for p, o in zip(pairs, outputs) if p["label"] and o["description"] is not None}
    hyps = [r["description"] for r in per_record.values()]
    refs = [r["reference"] for r in per_record.values()]
    cosines = semantic_cosine(hyps, refs, model_name=cfg.sentence_model) if cfg.semantic else [None] * len(hyps)
    for r, rouge, cosine in zip(per_record.values(), rouge_l_scores(hyps, refs), cosines):
        r.update(rouge_l=rouge, cosine=cosine, recall=keyword_recall_at_k(r["description"], r["reference"], cfg.k))
    result = {"model": judge_name(cfg, role), "seconds": round(time.perf_counter() - start, 1),
              "overall": judge_measures(pairs, outputs, per_record, blind, cfg.threshold), "groups": []}
    if cfg.groups > 1:
        for g in range(cfg.groups):
            index = [n for n, p in enumerate(pairs) if p["group"] == g]
            result["groups"].append(judge_measures([pairs[n] for n in index], [outputs[n] for n in index],
                                                   per_record, blind, cfg.threshold))
        accuracies = [g["accuracy"] for g in result["groups"]]
        result["overall"]["group_accuracy_std"] = statistics.pstdev(accuracies)
    rows = [{"group": p["group"], "id": records[p["record"]].get("id"), "character": records[p["record"]]["character"],
             "text_of": records[p["text_of"]]["character"], "label": p["label"], "text": texts[p["text_of"]],
             **{k: o.get(k) for k in ("score", "score_expected", "match_probability", "match", "status", "error",
                                      "keyword_overlap", "description", "analysis", "raw")}}
            for p, o in zip(pairs, outputs)]
    return result, rows


def judge_name(cfg: JudgeEvalConfig, role: str) -> str:
    model, adapter = (cfg.model, cfg.adapter) if role == "model" else (cfg.baseline, cfg.baseline_adapter)
    return model + (f" + {adapter}" if adapter else "")


def _plot(rows_by_role: dict[str, list[dict]], out: Path) -> None:
    """score_hist.png: sampled and expected scores of positives vs negatives per model; reliability.png: the
    verdict's reliability diagram. A model without any score gets a message instead of an empty plot."""
    fig, axes = plt.subplots(2, len(rows_by_role), figsize=(5 * len(rows_by_role), 6.5), squeeze=False)
    for column, (role, rows) in enumerate(rows_by_role.items()):
        for ax, key, bins in ((axes[0][column], "score", [s + 0.5 for s in range(11)]),
                              (axes[1][column], "score_expected", 18)):
            values = {label: [r[key] for r in rows if r["label"] == label and r.get(key) is not None]
                      for label in (False, True)}
            missing = sum(r.get(key) is None for r in rows)
            what = "sampled score" if key == "score" else "expected score"
            ax.set_title(f"{role}: {what} ({missing} of {len(rows)} without one)", fontsize=9)
            if not values[False] and not values[True]:
                ax.text(0.5, 0.5, f"no {what} in {len(rows)} pairs\n(every answer unparsed or failed)",
                        ha="center", va="center", transform=ax.transAxes)
                ax.set_axis_off()
                continue
            ax.hist([values[False], values[True]], bins=bins, range=(1, 10), label=["negatives", "positives"],
                    alpha=0.7)
            ax.set(xlabel=what, ylabel="pairs", xlim=(0.5, 10.5), xticks=range(1, 11))
            ax.legend()
    fig.tight_layout()
    fig.savefig(out / "score_hist.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfectly calibrated")
    for role, rows in rows_by_role.items():
        bins = reliability_bins([(r["match_probability"], r["label"]) for r in rows
                                 if r.get("match_probability") is not None])
        if bins:
            ax.plot([b["predicted"] for b in bins], [b["observed"] for b in bins], marker="o", label=role)
        else:
            ax.plot([], [], label=f"{role}: no score")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="model's probability of a match (score >= threshold)",
           ylabel="fraction that truly match", title="verdict reliability")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "reliability.png", dpi=100)
    plt.close(fig)


SUMMARY = [("accuracy", "accuracy"), ("roc_auc", "ROC-AUC"), ("roc_auc_expected", "ROC-AUC expected"),
           ("unparsed_rate", "unparsed"), ("overlap_auc", "overlap AUC"),
           ("keyword_recall", "Recall@K"), ("blind_guess_recall", "blind guess"), ("bleu", "BLEU-4"),
           ("rouge_l", "ROUGE-L"), ("semantic_cosine", "cosine"), ("mean_score_positive", "mean score +"),
           ("mean_score_negative", "mean score -"), ("mean_expected_positive", "mean expected +"),
           ("mean_expected_negative", "mean expected -"), ("calibration_error", "ECE")]


def report(cfg: JudgeEvalConfig, results: dict, n_characters: int) -> str:
    head = {"accuracy": f"accuracy (>= {cfg.threshold:g})", "keyword_recall": f"Recall@{cfg.k}"}
    rows = [{"model": role, **{head.get(k, name): m["overall"][k] for k, name in SUMMARY}}
            for role, m in results.items()]
    lines = [f"# animatch judge-eval ({cfg.split} split, {n_characters} characters, "
             f"{results['model']['overall']['pairs']} balanced pairs)", ""]
    lines += [f"- {role}: `{m['model']}` ({m['seconds']:.0f} s)" for role, m in results.items()]
    lines += ["", markdown_table(rows, floatfmt=".3f"), "",
              "Unparsed or failed pairs count as wrong verdicts; ROC-AUC is over the pairs with a score (sampled, "
              "or expected: the mean score under the model's probabilities of the score tokens). ECE: the "
              "calibration error of the model's probability of a match. The blind guess is another character's "
              "reference appearance in place of the description. Overlap AUC: the ROC-AUC of counting the "
              "candidate's keywords that the judge's own description names (basic colours), a comparison that "
              "learns nothing: where the judge's ROC-AUC is below it, stage 2 limits the judge; where both are "
              "low, stage 1 does.", ""]
    for role, m in results.items():
        if m["groups"]:
            groups = [{"group": g, **{head.get(k, name): f[k] for k, name in SUMMARY[:6]}}
                      for g, f in enumerate(m["groups"])]
            lines += [f"## {role}: per group (accuracy std {m['overall']['group_accuracy_std']:.3f})", "",
                      markdown_table(groups, floatfmt=".3f"), ""]
    lines += ["![scores](score_hist.png)", "", "![reliability](reliability.png)"]
    return "\n".join(lines)


def run_judge_eval(cfg: JudgeEvalConfig) -> int:
    out = claim_output(cfg, "judge-eval")
    records = load_split(cfg.split_dir, cfg.split)[:cfg.max_items]
    inside, unsafe = paths_inside(cfg.data, [r["file_name"] for r in records])
    if unsafe:  # never opened; the pairs are drawn among the others
        print(f"warning: {len(unsafe)} images left out, never opened ({unsafe[0][0]}: {unsafe[0][1]})",
              file=sys.stderr)
        records = [records[n] for n, _ in inside]
    pairs = build_pairs(records, cfg.groups, cfg.seed)
    blind = blind_guess(records, pairs, cfg.k, cfg.seed)
    roles = {"model": (cfg.model, cfg.adapter), **({"baseline": (cfg.baseline, cfg.baseline_adapter)}
                                                   if cfg.baseline else {})}
    results, rows_by_role, texts = {}, {}, None
    for role, (model, adapter) in roles.items():
        judge = Judge.from_options(cfg, model=model, adapter=adapter)
        if texts is None:  # cut with the first model's tokenizer, so both models judge the same texts
            tokenizer = judge.processor.tokenizer
            texts = {i: join_within(tokenizer, split_sentences(r["appearance"]), cfg.candidate_tokens)
                     for i, r in enumerate(records)}
        results[role], rows_by_role[role] = evaluate(judge, role, pairs, records, texts, blind, cfg)
        del judge
        atomic_write_text(out / f"pairs_{role}.jsonl",
                          "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows_by_role[role]))
    write_json(out / "judge_eval.json", {"split": cfg.split, "characters": len(records),
                                         "images_left_out": [{"path": p, "reason": r} for p, r in unsafe],
                                         "groups": cfg.groups,
                                         "k": cfg.k, "threshold": cfg.threshold, **results})
    _plot(rows_by_role, out)
    text = report(cfg, results, len(records))
    write_run_files(out, cfg, report=text, report_name="judge_eval.md")
    print(text)
    return 0
