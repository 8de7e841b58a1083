"""Appearance keywords: extraction on real and synthetic descriptions, the description order and basic colours
of `canonical_keywords`, and keyword recall."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from animatch.evaluate.keywords import (
    BASIC_COLOURS,
    COLOURS,
    canonical_keywords,
    corpus_keyword_recall_at_k,
    extract_keywords,
    keyword_overlap,
    keyword_recall_at_k,
)


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
     ["grey hair", "gold eyes", "cream dress", "thigh highs", "blonde ponytail"]),
    # a colour after its body noun: "eyes: X", "eyes are X", "eye colour: X", "skin tone is X"
    ("Hair: navy hair in a mohawk; eyes: stone-grey. Eye colour: cherry-red. His eyes are a deep blue.",
     ["navy hair", "mohawk", "grey eyes", "red eyes", "deep blue eyes"]),
    ("Skin tone is deep brown. Skin tone is very pale. Her skin is light. The portrait is set against a teal "
     "backdrop.", ["deep brown skin", "pale skin", "light skin", "teal background"]),
    # any words but function words between a colour and its noun
    ("Outfit: cerulean hooded jacket. A navy knight's armour, a salmon-pink school blazer and a lilac parka.",
     ["cerulean jacket", "navy armor", "pink blazer", "lilac parka"]),
    ("A red cape and she wears boots; green with envy, a hat.", ["red cape", "boots", "green", "hat"]),
    ("Her hair is tied with a red ribbon. She has green eyes. Blue is her colour; the hair, in short, is black.",
     ["red ribbon", "green eyes", "blue", "black"]),
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


def test_keyword_recall_matches_basic_colours_in_the_generated_order():
    reference = "He has navy hair, crimson eyes and a pastel pink scarf."
    assert keyword_recall_at_k("blue hair, red eyes, pink scarf", reference, k=3) == 1.0
    # the first k keywords as generated (not reordered); "azure hair" and "blue hair" are one keyword
    assert keyword_recall_at_k("pink scarf, azure hair, blue hair, red eyes", reference, k=3) == 1.0
    assert keyword_recall_at_k("pink scarf, azure hair, blue hair, red eyes", reference, k=2) == pytest.approx(2 / 3)
    assert keyword_recall_at_k("green hair, red eyes", reference, k=5) == pytest.approx(1 / 3)


def test_corpus_keyword_recall_skips_references_without_keywords():
    mean, skipped = corpus_keyword_recall_at_k(
        ["green eyes", "red boots", "anything"], ["green eyes, white hair", "red boots", "a kind girl"], k=3)
    assert mean == pytest.approx((0.5 + 1.0) / 2) and skipped == 1
    assert corpus_keyword_recall_at_k(["x"], ["a kind girl"], k=3) == (None, 1)


def test_canonical_keywords_order_a_description_top_to_bottom():
    keywords = extract_keywords("A tall man in a navy suit with light blue hair, a katana, dark skin and amber eyes. "
                                "Glasses, a ponytail, cat ears and a crimson scarf. Her shoes are teal.")
    assert canonical_keywords(keywords) == ["blue hair", "ponytail", "gold eyes", "dark skin", "blue suit", "shoes",
                                            "glasses", "cat ears", "red scarf", "katana", "blue"]


def test_canonical_keywords_name_basic_colours_and_drop_duplicates():
    assert canonical_keywords(["pastel pink eyes", "azure hair", "cerulean hair", "azure twin tails", "pink eyes"]) \
        == ["blue hair", "blue twin tails", "pink eyes"]
    # a modifier is dropped only before a colour: skin tones stay as written
    assert canonical_keywords(["light skin", "dark skin", "light blue hair"]) == ["blue hair", "light skin",
                                                                                  "dark skin"]
    assert canonical_keywords([]) == []


def test_basic_colours_map_known_shades_to_known_colours():
    assert set(BASIC_COLOURS) <= COLOURS and set(BASIC_COLOURS.values()) <= COLOURS
    assert not set(BASIC_COLOURS) & set(BASIC_COLOURS.values())  # one step: a basic colour is never a shade


def test_canonical_keywords_of_the_real_frieren_record(fixtures_dir):
    keywords = canonical_keywords(extract_keywords(_appearance(fixtures_dir, "Frieren")))
    assert keywords[:3] == ["white hair", "pigtails", "green eyes"]
    assert keywords.index("white jacket") < keywords.index("pointed ears") < keywords.index("red staff")


def test_keyword_overlap_compares_basic_colours():
    assert keyword_overlap("blue hair, gold eyes, black kimono", "She has azure hair and amber eyes.") == 2
    assert keyword_overlap("blue hair", "A boy with spiky red hair.") == 0
    assert keyword_overlap("", "A boy with spiky red hair.") == 0
