"""A light, dependency-free check that a text is English (the judge's prompts and fine-tuning are English only).

Two signals, both cheap and conservative so English text quoting a few Japanese names or words passes:
(1) the Unicode script of the letters: when more than `MAX_FOREIGN_SHARE` of them are not Latin, the text
is named by its dominant script (kana -> Japanese, Hangul -> Korean, Han alone -> Chinese, Cyrillic,
Arabic, ...); (2) for Latin-script text of at least `MIN_WORDS_FOR_STOPWORDS` words, function words that only
French, Spanish, German, Italian or Portuguese use: at least 3 of one language's and more than the English
ones. Romanised Japanese ("Chika Fujiwara", "Shingeki no Kyojin") has no such words, so it is not flagged.
"""

from __future__ import annotations

import re
import unicodedata

from animatch.errors import UserError

MAX_FOREIGN_SHARE = 0.3
MIN_WORDS_FOR_STOPWORDS = 6

# (first, last, script) code point ranges, checked in order.
_SCRIPTS = [
    (0x3040, 0x309F, "kana"), (0x30A0, 0x30FF, "kana"), (0x31F0, 0x31FF, "kana"), (0xFF66, 0xFF9F, "kana"),
    (0x1100, 0x11FF, "hangul"), (0x3130, 0x318F, "hangul"), (0xAC00, 0xD7AF, "hangul"),
    (0x3400, 0x4DBF, "han"), (0x4E00, 0x9FFF, "han"), (0xF900, 0xFAFF, "han"), (0x20000, 0x3134F, "han"),
    (0x0400, 0x052F, "cyrillic"), (0x0370, 0x03FF, "greek"), (0x0590, 0x05FF, "hebrew"),
    (0x0600, 0x06FF, "arabic"), (0x0750, 0x077F, "arabic"), (0xFB50, 0xFDFF, "arabic"), (0xFE70, 0xFEFF, "arabic"),
    (0x0900, 0x097F, "devanagari"), (0x0E00, 0x0E7F, "thai"),
]
_SCRIPT_NAMES = {
    "japanese": "Japanese (kana)", "hangul": "Korean (Hangul)", "han": "Chinese (Han characters)",
    "cyrillic": "Cyrillic script (e.g. Russian)", "greek": "Greek", "hebrew": "Hebrew", "arabic": "Arabic script",
    "devanagari": "Devanagari script (e.g. Hindi)", "thai": "Thai", "other": "a non-Latin script",
}


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_ENGLISH = _words("the and is are was were with has have her his she he they this that of to in on for "
                  "a an it its their wears wearing who which from by at as")
# Function words of each language that are not English words and not common romanised Japanese.
_FOREIGN = {
    "French": _words("le la les des et est une un du dans pour avec sur elle il ses cheveux qui sont aux ces "
                     "cette très"),
    "Spanish": _words("el los las y es una del en por con que su sus pelo ojos lleva tiene muy"),
    "German": _words("der die das und ist ein eine nicht mit auf sie er hat haare trägt den dem ihre sehr"),
    "Italian": _words("il lo gli e è della che di con per una capelli occhi ha sono molto"),
    "Portuguese": _words("o os as e é um uma do da dos das com que cabelo olhos tem usa muito"),
}


def _script(ch: str) -> str:
    code = ord(ch)
    if code < 0x0250 or 0x1E00 <= code <= 0x1EFF or 0xFF21 <= code <= 0xFF5A:
        return "latin"
    for first, last, name in _SCRIPTS:
        if first <= code <= last:
            return name
    return "other"


def _script_problem(letters: list[str]) -> str | None:
    counts: dict[str, int] = {}
    for ch in letters:
        script = _script(ch)
        counts[script] = counts.get(script, 0) + 1
    foreign = len(letters) - counts.get("latin", 0)
    if foreign <= MAX_FOREIGN_SHARE * len(letters):
        return None
    if counts.get("kana"):
        return "japanese"  # Japanese mixes kana with Han; any kana decides it
    return max((s for s in counts if s != "latin"), key=lambda s: counts[s])


def _stopword_problem(text: str) -> str | None:
    words = re.findall(r"[^\W\d_]+", text.lower())
    if len(words) < MIN_WORDS_FOR_STOPWORDS:
        return None
    english = sum(w in _ENGLISH for w in words)
    hits = {lang: sum(w in vocab and w not in _ENGLISH for w in words) for lang, vocab in _FOREIGN.items()}
    lang, n = max(hits.items(), key=lambda kv: kv[1])
    return lang if n >= 3 and n > english else None


def english_problem(text: str) -> str | None:
    """None when `text` looks English, else a one-line reason naming what it looks like instead."""
    if not isinstance(text, str) or not text.strip():
        return "text is empty; the judge needs an English description"
    letters = [ch for ch in unicodedata.normalize("NFC", text) if ch.isalpha()]
    if not letters:
        return "text has no letters; the judge needs an English description"
    script = _script_problem(letters)
    if script is not None:
        return f"text looks like {_SCRIPT_NAMES[script]}; the judge accepts English only"
    lang = _stopword_problem(text)
    if lang is not None:
        return f"text looks like {lang}; the judge accepts English only"
    return None


def require_english(text: str) -> None:
    """Raise UserError with the reason when `text` is not English."""
    problem = english_problem(text)
    if problem is not None:
        raise UserError(problem)
