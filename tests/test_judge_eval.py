"""`animatch judge-eval`: ROC-AUC and accuracy on fixed inputs, balanced grouped pairs, the blind guess,
every measure's aggregation on known descriptions, and the command end to end with a baseline."""

from __future__ import annotations

import itertools
import json
import random

import pytest

from animatch.cli import main
from animatch.evaluate.classification import average_ranks, roc_auc, threshold_accuracy
from animatch.judge.evaluation import blind_guess, build_pairs, calibration_error, judge_measures, reliability_bins

REF = "She has long pink hair, blue eyes and a black school uniform with a red ribbon."
OTHER = "He has short green hair, gold eyes and white armor."


def _brute_auc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    return sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg)) / (len(pos) * len(neg))


def test_roc_auc_known_values_and_ties():
    assert roc_auc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
    assert roc_auc([4, 3, 2, 1], [0, 0, 1, 1]) == 0.0
    assert roc_auc([5, 5, 5, 5], [0, 1, 0, 1]) == 0.5
    assert roc_auc([1, 2, 2, 3], [0, 1, 0, 1]) == 0.875  # (1 + 0.5 + 1 + 1) / 4
    assert roc_auc([1, 2], [1, 1]) is None and roc_auc([], []) is None
    assert average_ranks([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]
    rng = random.Random(0)
    for _ in range(20):
        scores = [rng.randint(1, 10) for _ in range(40)]
        labels = [rng.random() < 0.5 for _ in range(40)]
        assert roc_auc(scores, labels) == pytest.approx(_brute_auc(scores, labels))
    with pytest.raises(ValueError):
        roc_auc([1, 2], [1])


def test_threshold_accuracy_counts_missing_scores_as_wrong():
    assert threshold_accuracy([8, 2, None, 6], [True, False, True, False], 6) == 0.5
    assert threshold_accuracy([], [], 6) is None


def test_pairs_are_balanced_grouped_and_prefer_the_same_title():
    records = [{"title": t, "character": f"c{i}", "appearance": REF} for i, t in enumerate("AABBBCCDDE")]
    pairs = build_pairs(records, groups=2, seed=1)
    assert len(pairs) == 20 and sum(p["label"] for p in pairs) == 10
    positives = sorted(p["record"] for p in pairs if p["label"])
    assert positives == list(range(10))
    members = {g: {p["record"] for p in pairs if p["group"] == g} for g in (0, 1)}
    assert members[0].isdisjoint(members[1]) and len(members[0]) == len(members[1]) == 5
    for p in pairs:
        if p["label"]:
            assert p["text_of"] == p["record"]
            continue
        assert p["text_of"] != p["record"] and p["text_of"] in members[p["group"]]
        mates = [j for j in members[p["group"]] if j != p["record"] and records[j]["title"] ==
                 records[p["record"]]["title"]]
        assert not mates or p["text_of"] in mates
    assert build_pairs(records, groups=2, seed=1) == pairs
    with pytest.raises(Exception, match="groups"):
        build_pairs(records[:3], groups=2, seed=0)


def test_blind_guess_is_other_references_against_this_one():
    records = [{"appearance": REF}, {"appearance": REF}, {"appearance": OTHER}]
    pairs = [{"group": 0, "record": i, "text_of": i, "label": True} for i in range(3)]
    blind = blind_guess(records, pairs, k=5, seed=0)
    assert blind[0] == blind[1] == pytest.approx(0.5 * (1.0 + 0.0))  # an identical twin and a stranger
    assert blind[2] == 0.0


def test_judge_measures_on_known_outputs():
    pairs = [{"group": 0, "record": 0, "text_of": 0, "label": True},
             {"group": 0, "record": 0, "text_of": 1, "label": False},
             {"group": 0, "record": 1, "text_of": 1, "label": True},
             {"group": 0, "record": 1, "text_of": 0, "label": False}]
    outputs = [{"score": 9, "status": "ok", "keyword_overlap": 2}, {"score": 7, "status": "ok", "keyword_overlap": 1},
               {"score": None, "status": "unparsed", "keyword_overlap": 1},
               {"score": 2, "status": "ok", "keyword_overlap": None}]
    per_record = {0: {"description": REF, "reference": REF, "recall": 1.0, "rouge_l": 1.0, "cosine": 0.9},
                  1: {"description": REF, "reference": OTHER, "recall": 0.0, "rouge_l": 0.25, "cosine": 0.3}}
    f = judge_measures(pairs, outputs, per_record, {0: 0.2, 1: 0.1}, threshold=6)
    assert f["accuracy"] == 0.5  # right, wrong (7 >= 6), unparsed, right
    assert f["roc_auc"] == 1.0  # positive 9 above negatives 7 and 2 (the unparsed pair has no score)
    assert f["unparsed_rate"] == 0.25 and f["error_rate"] == 0.0
    assert f["mean_score_positive"] == 9 and f["mean_score_negative"] == 4.5
    assert f["keyword_recall"] == 0.5 and f["blind_guess_recall"] == pytest.approx(0.15)
    assert f["rouge_l"] == 0.625 and f["semantic_cosine"] == pytest.approx(0.6)
    assert 0 < f["bleu"] < 100 and f["descriptions"] == 2
    assert f["overlap_auc"] == 0.75  # positives 2 and 1 against the negative's 1 (a tie counts half)



def test_judge_eval_end_to_end_with_a_baseline(llava_tiny_dir, synth_root, prepared_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["judge-eval", "--data", str(synth_root), "--split-dir", str(prepared_dir), "--model",
                 str(llava_tiny_dir), "--baseline", str(llava_tiny_dir), "--split", "train", "--max-items", "8",
                 "--groups", "2", "--max-description-tokens", "6", "--max-analysis-tokens", "6", "--out",
                 str(out)]) == 0
    result = json.loads((out / "judge_eval.json").read_text())
    assert result["characters"] == 8 and set(result) >= {"model", "baseline"}
    for role in ("model", "baseline"):
        overall = result[role]["overall"]
        assert overall["pairs"] == 16 and overall["positives"] == 8 and len(result[role]["groups"]) == 2
        assert 0 <= overall["accuracy"] <= 1 and 0 <= overall["unparsed_rate"] <= 1
        assert overall["descriptions"] == 8 and -1 <= overall["semantic_cosine"] <= 1
        assert overall["blind_guess_recall"] is not None and "overlap_auc" in overall
        rows = [json.loads(line) for line in (out / f"pairs_{role}.jsonl").read_text().splitlines()]
        assert len(rows) == 16 and sum(r["label"] for r in rows) == 8
    report = (out / "judge_eval.md").read_text()
    assert "| model |" in report and "| baseline |" in report and "per group" in report
    assert (out / "score_hist.png").stat().st_size > 0 and (out / "config.yaml").is_file()
    assert "Recall@5" in capsys.readouterr().out


def test_expected_score_and_reliability():
    pairs = [{"group": 0, "record": i, "text_of": i, "label": label} for i, label in
             enumerate([True, True, False, False])]
    outputs = [{"score": 9, "score_expected": 8.5, "match_probability": 0.95, "status": "ok"},
               {"score": 2, "score_expected": 5.0, "match_probability": 0.45, "status": "ok"},
               {"score": 9, "score_expected": 4.0, "match_probability": 0.55, "status": "ok"},
               {"score": None, "score_expected": None, "match_probability": None, "status": "unparsed"}]
    f = judge_measures(pairs, outputs, {}, {}, threshold=6)
    assert f["roc_auc"] == 0.25 and f["roc_auc_expected"] == 1.0  # the expected score ranks what sampling did not
    assert f["mean_expected_positive"] == 6.75 and f["mean_expected_negative"] == 4.0
    bins = reliability_bins([(0.95, True), (0.45, True), (0.55, False), (0.5, False)])
    assert bins == [{"predicted": 0.45, "observed": 1.0, "pairs": 1},
                    {"predicted": 0.525, "observed": 0.0, "pairs": 2},
                    {"predicted": 0.95, "observed": 1.0, "pairs": 1}]
    assert calibration_error([(0.95, True), (0.45, True), (0.55, False), (0.5, False)]) == \
        pytest.approx((0.55 + 2 * 0.525 + 0.05) / 4)
    assert calibration_error([]) is None
    assert f["calibration_error"] == pytest.approx((0.05 + 0.55 + 0.55) / 3)
