"""The expected score of a stage-2 answer, as G-Eval weighs a score by the model's probabilities.

The sampled `Score: N` is one draw; the model's confidence is in its distribution over the score tokens at
the position where it writes the score. `ScoreTokens` finds every vocabulary token that decodes to a score
(`1`-`10`, with or without a word-start marker), and `distribution(generated ids, logits)` takes the
first digit token the answer writes after the word "score" (or "rating") and the raw logits there (before
temperature and top-p): p(s) over the scores, renormalised. `expected_score` is sum(s * p(s));
`match_probability` the probability of a score at or above the verdict threshold. Where "10" is not one
token it is written "1", "0": the probability of "1" is split between 1 and 10 by the model's probability
of "0" at the next step when the answer wrote "1" there (otherwise that step was not computed, and the
mass counts as 1).
None when the answer writes no score token after "score".
"""

from __future__ import annotations

import re
from typing import Any

import torch

from animatch.judge.parse import SCORE_MAX, SCORE_MIN, normalise

_LABEL = re.compile(r"\b(?:score|rating)\b[^0-9]*$", re.IGNORECASE)


class ScoreTokens:
    """The score tokens of a tokenizer, and the expected score of an answer (see the module docstring)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.ids: dict[int, list[int]] = {s: [] for s in range(SCORE_MIN, SCORE_MAX + 1)}
        self.zero: list[int] = []
        self.digit_tokens: set[int] = set()
        for token_id in range(len(tokenizer)):
            piece = tokenizer.decode([token_id]).strip()
            if piece.isdigit() and piece.isascii():
                self.digit_tokens.add(token_id)
                if piece == "0":
                    self.zero.append(token_id)
                elif SCORE_MIN <= int(piece) <= SCORE_MAX and str(int(piece)) == piece:
                    self.ids[int(piece)].append(token_id)
        self.one_token_ten = bool(self.ids[10])

    def position(self, generated: list[int]) -> int | None:
        """The step at which `generated` writes its score: the first digit token after "score"."""
        for step, token_id in enumerate(generated):
            if token_id in self.digit_tokens and \
                    _LABEL.search(normalise(self.tokenizer.decode(generated[:step], skip_special_tokens=True))):
                return step
        return None

    def distribution(self, generated: list[int], logits: torch.Tensor) -> dict[int, float] | None:
        """{score: probability} (summing to 1) at the score position of an answer, from its ids and the
        [steps, vocab] logits that produced them; None when it writes no score."""
        step = self.position(generated)
        if step is None:
            return None
        probs = torch.softmax(logits[step].float(), dim=-1)
        mass = {s: float(probs[ids].sum()) if ids else 0.0 for s, ids in self.ids.items()}
        if not self.one_token_ten:
            wrote_one = generated[step] in self.ids[1]
            if wrote_one and step + 1 < len(generated) and self.zero:
                p_zero = float(torch.softmax(logits[step + 1].float(), dim=-1)[self.zero].sum())
                mass[1], mass[10] = mass[1] * (1 - p_zero), mass[1] * p_zero
        total = sum(mass.values())
        return {s: p / total for s, p in mass.items()} if total > 0 else None


def expected_score(distribution: dict[int, float] | None) -> float | None:
    """sum(s * p(s)): the score weighted by the model's confidence (G-Eval)."""
    return None if distribution is None else sum(s * p for s, p in distribution.items())


def match_probability(distribution: dict[int, float] | None, threshold: float) -> float | None:
    """The model's probability of a score at or above `threshold` (a match verdict)."""
    return None if distribution is None else sum(p for s, p in distribution.items() if s >= threshold)
