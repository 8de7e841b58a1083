"""The expected score (G-Eval style): the score tokens of a real tokenizer, the score position of an answer,
the probability-weighted score, "10" written as "1" "0", and the end-to-end keys of a judge result."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

from animatch.judge.judge import Judge
from animatch.judge.scores import ScoreTokens, expected_score, match_probability


@pytest.fixture(scope="module")
def tokenizer(llava_tiny_dir):
    return AutoTokenizer.from_pretrained(str(llava_tiny_dir))


def _answer(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _logits(tokenizer, generated: list[int], at: dict[int, dict[str, float]]) -> torch.Tensor:
    """[steps, vocab] logits: the generated token everywhere, except probabilities `at[step]` over pieces."""
    logits = torch.full((len(generated), len(tokenizer)), -30.0)
    logits[torch.arange(len(generated)), torch.tensor(generated)] = 0.0
    for step, probs in at.items():
        logits[step] = -30.0
        for piece, p in probs.items():
            for token_id in _answer(tokenizer, piece)[-1:]:
                logits[step, token_id] = math.log(p)
    return logits


def test_score_tokens_and_expected_score(tokenizer):
    scores = ScoreTokens(tokenizer)
    assert all(scores.ids[s] for s in range(1, 10))
    generated = _answer(tokenizer, "Score: 7\nAnalysis: the hair matches.")
    step = scores.position(generated)
    assert tokenizer.decode(generated[step]).strip() == "7"
    dist = scores.distribution(generated, _logits(tokenizer, generated, {step: {"7": 0.5, "9": 0.25, "2": 0.25}}))
    assert dist[7] == pytest.approx(0.5) and dist[9] == pytest.approx(0.25) and sum(dist.values()) == pytest.approx(1)
    assert expected_score(dist) == pytest.approx(0.5 * 7 + 0.25 * 9 + 0.25 * 2)
    assert match_probability(dist, 6) == pytest.approx(0.75)
    # a digit before the word "score" is not the score
    early = _answer(tokenizer, "In 3 words. Score: 8")
    assert tokenizer.decode(early[scores.position(early)]).strip() == "8"
    assert scores.distribution(_answer(tokenizer, "no number here"), torch.zeros(4, len(tokenizer))) is None
    assert expected_score(None) is None and match_probability(None, 6) is None


def test_ten_written_as_one_zero(tokenizer):
    scores = ScoreTokens(tokenizer)
    generated = _answer(tokenizer, "Score: 10")
    step = scores.position(generated)
    assert not scores.one_token_ten and tokenizer.decode(generated[step]).strip() == "1"
    logits = _logits(tokenizer, generated, {step: {"1": 0.8, "2": 0.2}, step + 1: {"0": 0.75, "!": 0.25}})
    dist = scores.distribution(generated, logits)
    assert dist[10] == pytest.approx(0.6) and dist[1] == pytest.approx(0.2) and dist[2] == pytest.approx(0.2)


def test_failed_pairs_carry_the_keys_too(llava_tiny_dir):
    judge = Judge(str(llava_tiny_dir), device="cpu", max_description_tokens=4, max_analysis_tokens=6)
    result = judge.analyze(Image.new("RGB", (64, 64)), "Er hat rote Haare und trägt eine Brille.")
    assert result["status"] == "error" and result["score_expected"] is None and result["match_probability"] is None
