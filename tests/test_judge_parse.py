"""Score and analysis parsing of stage-2 output: realistic variants are read, junk gives None."""

from __future__ import annotations

import pytest

from animatch.judge.parse import parse_analysis, parse_relevance, parse_score

VARIANTS = [
    ("Score: 8\nAnalysis: The pink hair matches.", 8),
    ("score: 8", 8),
    ("SCORE: 8", 8),
    ("**Score:** 8\n**Analysis:** good", 8),
    ("**Score: 8**", 8),
    ("### Score: 7", 7),
    ("- Score: 6", 6),
    ("Score：8", 8),  # full-width colon
    ("Score: ８", 8),  # full-width digit
    ("Score:8", 8),
    ("Score: 8/10", 8),
    ("Score: 8 / 10", 8),
    ("Score: 8 out of 10", 8),
    ("Score - 8", 8),
    ("Score — 8", 8),
    ("Score = 8", 8),
    ("Score 9", 9),
    ("Score is 5.", 5),
    ("Score: eight", 8),
    ("Score: Eight out of ten.", 8),
    ("Sure! Here is my evaluation of the text.\n\nScore: 3\nAnalysis: wrong hair colour.", 3),
    ("Relevance score: 4", 4),
    ("Final Rating: 9/10", 9),
    ("I would give it a score of 6 because the outfit matches.", 6),
    ("Score: (7)", 7),
    ("Score: [7]", 7),
    ("Score: 7.5", 8),  # decimals round half up
    ("Score: 7.4", 7),
    ("Score: 8.0", 8),
    ("Score: 7-8", 8),  # a range takes its midpoint
    ("Score: 85/100", 9),  # a denominator rescales to 10
    ("Score: 4/5", 8),
    ("Score: 0", 1),  # clamped to 1-10
    ("Score: 12", 10),
    ("8\nAnalysis: close match", 8),
    ("**8**", 8),
    ("Overall I'd say 7/10 for this description.", 7),
    ("It deserves nine out of ten.", 9),
    ("Score: [1-10]\nScore: 6", 6),  # template echo first, then the answer
]

JUNK = [
    "",
    None,
    "I cannot determine how well the text matches.",
    "Score: N/A",
    "Score: high",
    "Score:",
    "Score: <1-10>\nAnalysis: [reasoning]",
    "Score: [1-10]",
    "The image shows 3 girls and 2 cats.",
    "!!!!!!",
    "Analysis: the hair is pink.",
    "</s><unk> 1234 ASSISTANT",
]


@pytest.mark.parametrize("text,expected", VARIANTS)
def test_parse_score_reads_realistic_variants(text, expected):
    assert parse_score(text) == expected


@pytest.mark.parametrize("text", JUNK)
def test_parse_score_rejects_junk(text):
    assert parse_score(text) is None


def test_parse_analysis_takes_the_labelled_reasoning():
    assert parse_analysis("Score: 8\n**Analysis:** The pink hair\nmatches.") == "The pink hair\nmatches."
    assert parse_analysis("Score: 8\nThe outfit matches.") == "The outfit matches."
    assert parse_analysis("No idea.") == "No idea."
    assert parse_relevance("Score: 2\nAnalysis: wrong eyes") == (2, "wrong eyes")
    assert parse_relevance(None) == (None, "")
