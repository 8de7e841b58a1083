"""Stage 1 of a judge alone, on synthetic characters: how often its description names each drawn attribute.

judge-eval scores descriptions against reference texts (keyword Recall@K, overlap AUC); on `animatch synth` data
the drawn attributes are known, so this bench says which ones the descriptions get right: hair colour, eye
colour, outfit, outfit colour, accessory (a character without one counts as right when no accessory is named).
A colour counts in any of its spellings (synth's `COLOR_WORDS`, e.g. "azure" or "blue" for blue) and must stand
before its noun ("pink hair", "pink twin tails"). Greedy descriptions, as `animatch judge`
writes them; the first N test characters.

Usage: .venv/bin/python bench/describe_synth.py --data ROOT --split-dir PREPARED --model JUDGE_DIR [--n 100]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from animatch.data.images import load_image
from animatch.data.synth_text import ACCESSORY_PHRASES, ATTRIBUTES, COLOR_WORDS
from animatch.evaluate.keywords import BASIC_COLOURS, COLOUR_ALIASES
from animatch.judge.judge import Judge

OUTFIT_WORDS = {"dress": "dress", "school uniform": "uniform", "kimono": "kimono|obi", "armor": "armor",
                "hoodie": "hoodie|sweatshirt", "suit": "suit"}
OUTFIT_NOUNS = "|".join(OUTFIT_WORDS.values())


def _colour(name: str) -> str:
    """A regex for colour `name` in any spelling synth writes (or the keyword extractor's alias of it: "golden"
    -> "gold"), or a shade of it."""
    words = set(COLOR_WORDS[name]) | {COLOUR_ALIASES.get(w, w) for w in COLOR_WORDS[name]} | {name}
    words |= {shade for shade, basic in BASIC_COLOURS.items() if basic == name}
    return "(?:" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + ")"


def attribute_hits(attributes: dict, description: str) -> dict[str, bool]:
    d = description.lower()
    accessories = [w for a in ATTRIBUTES["accessory"] if a != "none" for w in (a, *ACCESSORY_PHRASES[a])]
    named = any(re.search(rf"\b{re.escape(w.split()[-1])}\b", d) for w in accessories)
    accessory = attributes["accessory"]
    return {
        "hair colour": bool(re.search(_colour(attributes["hair_color"]) + r"[a-z ,-]{0,12}(hair|tails|ponytail|bob)",
                                      d)),
        "eye colour": bool(re.search(_colour(attributes["eye_color"]) + r"[ -]{0,3}(colored )?eyes", d)),
        "outfit": bool(re.search(rf"\b({OUTFIT_WORDS[attributes['outfit']]})\b", d)),
        "outfit colour": bool(re.search(_colour(attributes["outfit_color"]) + rf"[a-z -]{{0,25}}({OUTFIT_NOUNS})", d)),
        "accessory": not named if accessory == "none" else
        bool(re.search(rf"\b{re.escape(accessory.split()[-1])}\b", d)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--split-dir", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--n", type=int, default=100)
    args = parser.parse_args()
    records = [json.loads(line) for line in (Path(args.split_dir) / "test.jsonl").read_text().splitlines()][:args.n]
    judge = Judge(args.model, device="cpu", max_description_tokens=48)
    descriptions: list[str] = []
    for start in range(0, len(records), 50):
        images = [load_image(Path(args.data) / r["file_name"]) for r in records[start:start + 50]]
        descriptions += judge.describe(images)
    hits = [attribute_hits(r["attributes"], d) for r, d in zip(records, descriptions)]
    rates = {name: sum(h[name] for h in hits) / len(hits) for name in hits[0]}
    print(" | ".join(f"{name} {rate:.2f}" for name, rate in rates.items()) +
          f" | mean {sum(rates.values()) / len(rates):.3f} ({len(records)} test characters)")
    for description in descriptions[:3]:
        print("  e.g.", description)


if __name__ == "__main__":
    main()
