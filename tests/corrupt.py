"""Synthetic corruption of `animatch synth` records, with ground truth: what the audit must find.

`corrupt_records` swaps the appearance texts of randomly paired characters (a "swap": the text describes
another character) and appends one wrong sentence to others (a "sentence": a sentence stating a different
value of one drawn attribute, written by `synth_text.appearance_sentences` for the altered attributes, so it
reads like the rest of the text). Records need the synth field "attributes". The truth maps each corrupted
record's file_name to {"kind": "swap", "partner": file_name} or {"kind": "sentence", "sentence": text,
"attribute": name, "value": wrong value}. Used by the audit's tests and by bench/audit_synth.py.
"""

from __future__ import annotations

import random
import re

from animatch.data.synth_text import ATTRIBUTES, appearance_sentences

# Attributes a wrong sentence may contradict ("none" is never the wrong accessory: it writes no sentence).
CONTRADICTABLE = ("hair_color", "hair_style", "eye_color", "outfit", "outfit_color", "accessory")
_FEMININE = re.compile(r"\b(she|her|hers|herself)\b", re.IGNORECASE)


def _pronoun(text: str) -> str:
    return "she" if _FEMININE.search(text) else "he"


def wrong_sentence(record: dict, rng: random.Random) -> tuple[str, str, str]:
    """(sentence, attribute, wrong value): one sentence stating a value of one attribute that the image lacks."""
    attrs = record["attributes"]
    attribute = rng.choice(CONTRADICTABLE)
    value = rng.choice([v for v in ATTRIBUTES[attribute] if v not in (attrs[attribute], "none")])
    altered = {**attrs, attribute: value}
    for _ in range(100):
        sentences = appearance_sentences(altered, rng, record["character"], _pronoun(record["appearance"]))
        stating = [s for s in sentences[1:] if attribute in s.attributes]  # body sentences read as additions
        if stating:
            return min(stating, key=lambda s: len(s.attributes)).text, attribute, value
    raise RuntimeError(f"no sentence states {attribute}")  # accessory skipped 100 times in a row: impossible


def corrupt_records(records: list[dict], *, swap_fraction: float = 0.10, sentence_fraction: float = 0.05,
                    seed: int = 0) -> tuple[list[dict], dict[str, dict]]:
    """(corrupted copies of `records` in the same order, truth by file_name); untouched records are copied as is.

    round(n * swap_fraction) records (rounded down to even) swap texts in random pairs; round(n *
    sentence_fraction) others get one wrong sentence appended to their last paragraph. Any prepared
    "appearance_chunks" of a corrupted record are dropped (they no longer match its text)."""
    rng = random.Random(seed)
    out = [dict(r) for r in records]
    order = rng.sample(range(len(out)), len(out))
    n_swap = int(round(len(out) * swap_fraction)) // 2 * 2
    n_sentence = int(round(len(out) * sentence_fraction))
    swapped, appended = order[:n_swap], order[n_swap:n_swap + n_sentence]
    truth: dict[str, dict] = {}
    for a, b in zip(swapped[::2], swapped[1::2]):
        out[a]["appearance"], out[b]["appearance"] = records[b]["appearance"], records[a]["appearance"]
        truth[out[a]["file_name"]] = {"kind": "swap", "partner": out[b]["file_name"]}
        truth[out[b]["file_name"]] = {"kind": "swap", "partner": out[a]["file_name"]}
    for i in appended:
        sentence, attribute, value = wrong_sentence(out[i], rng)
        out[i]["appearance"] = out[i]["appearance"].rstrip() + " " + sentence
        truth[out[i]["file_name"]] = {"kind": "sentence", "sentence": sentence, "attribute": attribute,
                                      "value": value}
    for i in swapped + appended:
        out[i].pop("appearance_chunks", None)
    return out, truth
