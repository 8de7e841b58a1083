"""Text cleaning, the non-appearance rule, the token estimate and CLIP-sized chunks."""

from __future__ import annotations

import json

import pytest

from animatch.data.text import (
    SINGLE_TOKEN_WORDS,
    appearance_chunks,
    chunk_windows,
    clean_text,
    estimate_clip_tokens,
    non_appearance_reason,
    split_sentences,
    tokenizer_token_counter,
)
from animatch.errors import UserError


def _fixture_records(fixtures_dir) -> dict[str, dict]:
    lines = (fixtures_dir / "metadata.jsonl").read_text(encoding="utf-8").splitlines()
    return {r["character"]: r for r in map(json.loads, lines)}


def test_clean_text_removes_citations_and_wiki_artefacts_and_keeps_paragraphs():
    raw = ("Appearance [ ]\nEdit\n  She is a mage , she wears a  red cloak [7] ( long ) .[citation needed]"
           "\n\n"
           "Her hair is\u00a0white [note 1] [a] and her eyes are blue [clarification needed] !\nGallery\n"
           "Tom &amp; Kaguya 's friend.\u200b")
    assert clean_text(raw) == ("She is a mage, she wears a red cloak (long).\n"
                               "Her hair is white and her eyes are blue!\nTom & Kaguya's friend.")
    assert clean_text("") == "" and clean_text(None) == ""


def test_real_records_clean_and_classify(fixtures_dir):
    recs = _fixture_records(fixtures_dir)
    frieren = recs["Frieren"]
    personality = clean_text(frieren["personality"])
    assert "[7]" not in personality and "[8]" not in personality
    assert "differently. As an elf" in personality and "Himmel the Hero, even" in personality
    appearance = clean_text(frieren["appearance"])
    assert appearance.count("\n") == 3 and "as a mage, she utilizes" in appearance
    assert non_appearance_reason(appearance) is None
    assert non_appearance_reason(clean_text(recs["Chika Fujiwara"]["appearance"])) is None
    reason = non_appearance_reason(clean_text(recs["Angewomon (Re:Digitize)"]["appearance"]))
    assert reason == "not an appearance: starts with the section header 'Attacks'"


def test_move_lists_without_a_header_are_not_appearances_but_one_colon_is_fine():
    moves = ("Holy Arrow : Attacks with a lightning strike. Heaven's Charm : Fires a ray of light. "
             "She is an angel.")
    assert clean_text(moves).startswith("Holy Arrow: Attacks")
    assert "2 of 3 sentences are move entries" in non_appearance_reason(clean_text(moves))
    ok = "She has long hair. Her outfit: She wears a red dress. Notes: Looks older in season two."
    assert non_appearance_reason(clean_text(ok)) is None
    assert "section header 'Abilities'" in non_appearance_reason("Abilities:\nShe can fly.")


def test_split_sentences_handles_quotes_and_ellipses():
    text = 'Known as "Heaven\'s Punishment". Heaven\'s Charm is bright... It shines! 3 rays? yes.'
    assert split_sentences(text) == ['Known as "Heaven\'s Punishment".', "Heaven's Charm is bright...",
                                     "It shines!", "3 rays? yes."]


def test_estimate_counts_pretokens_conservatively():
    assert estimate_clip_tokens("") == 2
    assert {"the", "hair", "eyes", "wears"} <= SINGLE_TOKEN_WORDS
    assert estimate_clip_tokens("She has red hair.") == 2 + 5
    assert estimate_clip_tokens("Frieren") == 2 + 4           # ceil((7 + 1) / 2)
    assert estimate_clip_tokens("Kaguya's 12") == 2 + 4 + 1 + 2   # word, 's, two single digits
    assert estimate_clip_tokens("藤原") == 2 + 6                 # one token per UTF-8 byte at worst
    assert estimate_clip_tokens('"!?') == 2 + 3


def test_chunks_fit_the_budget_and_lose_no_word(fixtures_dir):
    appearance = clean_text(_fixture_records(fixtures_dir)["Frieren"]["appearance"])
    chunks = appearance_chunks(appearance)
    assert len(chunks) >= 4
    assert all(estimate_clip_tokens(c) <= 77 for c in chunks)
    assert " ".join(chunks).split() == appearance.split()
    assert all(c[-1] in ".!?" for c in chunks)  # whole sentences: every sentence here fits alone
    assert not any("\n" in c for c in chunks)


def test_over_long_sentences_split_at_commas_then_words_then_characters():
    clauses = ", ".join(f"a cloak number {i} with gold trim and red jewels" for i in range(12)) + "."
    chunks = appearance_chunks(clauses, max_tokens=30)
    assert len(chunks) > 2 and all(estimate_clip_tokens(c) <= 30 for c in chunks)
    assert all(c.endswith((",", ".")) for c in chunks)
    assert " ".join(chunks).split() == clauses.split()
    words = " ".join(["hair"] * 100)
    assert all(estimate_clip_tokens(c) <= 20 for c in appearance_chunks(words, max_tokens=20))
    giant = "x" * 500
    pieces = appearance_chunks(giant, max_tokens=12)
    assert "".join(pieces) == giant and all(estimate_clip_tokens(p) <= 12 for p in pieces)
    with pytest.raises(ValueError):
        appearance_chunks("text", max_tokens=3)
    assert appearance_chunks("") == []


def test_chunks_with_a_custom_counter_and_a_real_tokenizer(tmp_path):
    def words(s: str) -> int:
        return len(s.split()) + 2

    text = "One two three. Four five six seven. Eight nine."
    assert appearance_chunks(text, max_tokens=8, count_tokens=words) == ["One two three.",
                                                                         "Four five six seven. Eight nine."]
    # a character-level CLIP BPE (no merges): every character is a token
    from transformers import CLIPTokenizer

    chars = [chr(c) for c in range(33, 127)]
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    tokenizer.save_pretrained(tmp_path / "tok")
    count = tokenizer_token_counter(str(tmp_path / "tok"))
    assert count("Hi, all.") == 2 + 7
    text = "She has long white hair, green eyes and pointed ears. She wears a cape."
    chunks = appearance_chunks(text, 30, count)
    assert len(chunks) >= 3 and all(count(c) <= 30 for c in chunks)
    with pytest.raises(UserError, match="cannot load tokenizer"):
        tokenizer_token_counter(str(tmp_path / "missing"))


def test_chunk_windows_start_at_every_chunk_and_wrap_round():
    assert chunk_windows(["A.", "B.", "C."]) == ["A. B. C.", "B. C. A.", "C. A. B."]
    assert chunk_windows(["Only one."]) == ["Only one."]
    assert chunk_windows([]) == []
