"""Reading the relevance score and analysis out of real stage-2 model output.

The judge asks for `Score: <1-10>` on the first line and `Analysis: ...` after it; models answer with
markdown bold, full-width punctuation, `8/10`, `Score - 8`, `Score = 8`, spelled-out numbers, a chatty
sentence first, decimals, or an echo of the template. `parse_score` accepts the first three families and
returns None for anything it cannot read with confidence (never a default score). Rules:
decimals round half up (7.5 -> 8, 7.4 -> 7); a denominator rescales to 10 (`85/100` -> 9, `4/5` -> 8);
a range takes its midpoint (`7-8` -> 8) except a template echo (`1-10`, `<1-10>`, `[1-10]`) which is junk;
the result is clamped to 1-10 (`0` -> 1, `12` -> 10).
"""

from __future__ import annotations

import math
import re
import unicodedata

SCORE_MIN, SCORE_MAX = 1, 10

_WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
          "nine": 9, "ten": 10}
_NUM = r"(?:\d+(?:\.\d+)?|" + "|".join(_WORDS) + r")"
_OPEN, _CLOSE = r"[\(\[<{]?", r"[\)\]>}]?"
# Denominator: "/10", "/ 10", "out of 10", "of ten".
_DENOM = rf"(?:\s*(?:/|out\s+of|of)\s*(?P<den>{_NUM}))?"
_RANGE = rf"(?:\s*(?:-|to)\s*(?P<hi>{_NUM}))?"
_VALUE = rf"{_OPEN}\s*(?P<num>{_NUM}){_RANGE}\s*{_CLOSE}{_DENOM}"
# "Score: 8", "Relevance score - 8", "score = 8", "score of 8", "score is 8", "rating: 8/10".
_LABELLED = re.compile(
    rf"\b(?:score|rating)\b\s*(?:\s(?:is|would\s+be|of)\b|[:=\-–—]|\s)\s*(?:a\s+|an\s+)?{_VALUE}(?!\w)",
    re.IGNORECASE)
# A bare fraction anywhere: "I'd give it 8/10", "eight out of ten".
_FRACTION = re.compile(rf"(?<![\w.])(?P<num>{_NUM})\s*(?:/|out\s+of)\s*(?P<den>10|ten|100|5|five)\b",
                       re.IGNORECASE)
# The first non-empty line is only a number: "8", "**8**", "8.".
_BARE_FIRST_LINE = re.compile(rf"^\s*{_OPEN}\s*(?P<num>\d+(?:\.\d+)?)\s*{_CLOSE}\s*\.?\s*$")
_ANALYSIS = re.compile(r"\banalysis\b\s*[:=\-–—]\s*", re.IGNORECASE)


def normalise(text: str) -> str:
    """NFKC (full-width colon and digits become ASCII) without markdown emphasis, headings or code ticks."""
    text = unicodedata.normalize("NFKC", text)
    return re.sub(r"[*_`#]+", "", text)


def _number(token: str | None) -> float | None:
    if token is None:
        return None
    token = token.lower()
    return float(_WORDS[token]) if token in _WORDS else float(token)


def _to_score(num: float, hi: float | None, den: float | None) -> int | None:
    if hi is not None:
        if (num, hi) == (1.0, 10.0):  # the template's "1-10" echoed back, not an answer
            return None
        num = (num + hi) / 2
    if den is not None:
        if den <= 0:
            return None
        num = num * 10 / den
    return min(SCORE_MAX, max(SCORE_MIN, math.floor(num + 0.5)))


def parse_score(text: str | None) -> int | None:
    """The 1-10 score in `text`, or None when no score can be read (see the module docstring)."""
    if not text:
        return None
    clean = normalise(text)
    for match in _LABELLED.finditer(clean):
        score = _to_score(_number(match["num"]), _number(match["hi"]), _number(match["den"]))
        if score is not None:
            return score
    if re.search(r"\b(?:score|rating)\b", clean, re.IGNORECASE) is None:
        first = next((line for line in clean.splitlines() if line.strip()), "")
        bare = _BARE_FIRST_LINE.match(first)
        if bare:
            return _to_score(_number(bare["num"]), None, None)
    match = _FRACTION.search(clean)
    if match:
        return _to_score(_number(match["num"]), None, _number(match["den"]))
    return None


def parse_analysis(text: str | None) -> str:
    """The reasoning: what follows `Analysis:`, else everything after the score line, else the whole text."""
    if not text:
        return ""
    clean = normalise(text).strip()
    match = _ANALYSIS.search(clean)
    if match:
        return clean[match.end():].strip()
    lines = clean.splitlines()
    for i, line in enumerate(lines):
        if _LABELLED.search(line):
            rest = "\n".join(lines[i + 1:]).strip()
            return rest or clean
    return clean


def parse_relevance(text: str | None) -> tuple[int | None, str]:
    """(score or None, analysis) of one stage-2 answer."""
    return parse_score(text), parse_analysis(text)
