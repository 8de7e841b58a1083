"""A second persona writer, for checking that the judge does not learn `animatch synth`'s wording.

Usage: .venv/bin/python bench/persona_rewrite.py --data SYNTH_ROOT --out NEW_ROOT [--seed 1]
Reads a dataset written by `animatch synth` (its drawn `attributes`) and writes a dataset root with the same
images (hard links, or copies across file systems) and new appearance texts, worded and built differently:
other colour words for every value ("cherry-red", "navy", "lilac" where synth writes "red", "blue",
"purple"), other nouns ("gown", "yukata", "spectacles", "beret"), other sentence shapes (a profile line
"Hair: ...; eyes: ...", passive and fronted clauses), single-word names, an attribute synth never
describes (the backdrop colour of the picture) and sometimes none of the hair style. Personality texts are
new too. Titles are kept. The product never sees this module; only benches and docs use it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
from pathlib import Path

COLOURS = {
    "black": ["charcoal", "ink-black", "ebony-black"], "brown": ["auburn", "coffee-brown", "hazel"],
    "blonde": ["honey-blonde", "pale gold", "wheat-blonde"], "red": ["cherry-red", "vermilion", "ruby-red"],
    "orange": ["copper", "amber-orange", "peach-orange"], "pink": ["coral", "fuchsia", "salmon-pink"],
    "purple": ["lilac", "mauve", "lavender"], "blue": ["navy", "cerulean", "sky-blue"],
    "green": ["mint", "olive", "lime"], "silver": ["ash-silver", "pearl-silver", "steel-grey"],
    "gold": ["amber", "honey-gold", "golden-brown"], "gray": ["ash-grey", "stone-grey", "smoke-grey"],
    "white": ["ivory", "cream", "milk-white"], "yellow": ["mustard-yellow", "lemon", "canary-yellow"],
}
BACKDROPS = {"sky": "pale blue", "peach": "peach", "mint": "mint", "lavender": "lavender", "cream": "cream",
             "rose": "dusty pink", "teal": "teal", "sand": "beige"}
HAIR_STYLES = {"long": ["worn long", "falling past the shoulders"], "short": ["kept short", "in a short crop"],
               "twin tails": ["in pigtails", "tied in twin tails"], "ponytail": ["in a ponytail", "pulled into a tail"],
               "bob": ["in a blunt chin cut", "cut to the jaw"], "spiky": ["standing up in spikes", "in a mohawk"]}
OUTFITS = {"dress": ["gown", "sundress"], "school uniform": ["blazer uniform", "school blazer"],
           "kimono": ["yukata", "robe"], "armor": ["armour", "knight's armour"], "hoodie": ["hooded jacket", "parka"],
           "suit": ["tuxedo", "blazer and trousers"]}
ACCESSORIES = {"glasses": ["spectacles", "reading spectacles"], "hat": ["beret", "cap"],
               "ribbon": ["bow", "hair bow"], "cat ears": ["a cat-ear headband", "cat ears"],
               "scarf": ["neckerchief", "a knitted muffler"]}
SKIN = {"fair": "very pale", "light": "light", "tan": "sun-browned", "dark": "deep brown"}
SYLLABLES = ["il", "sa", "ma", "ro", "to", "ve", "qu", "in", "se", "la", "br", "am", "yu", "os", "ka", "ne", "ed"]
TEMPERS = ["quiet", "loud", "patient", "restless", "witty", "grumpy", "dreamy", "bold"]


def _pick(rng: random.Random, values: list[str]) -> str:
    return rng.choice(values)


def appearance(attributes: dict, name: str, rng: random.Random) -> str:
    """A profile-style appearance text, its sentences shuffled, in words synth never uses."""
    c = lambda key: _pick(rng, COLOURS[attributes[key]])  # noqa: E731
    hair = f"{c('hair_color')} hair" + (f" {_pick(rng, HAIR_STYLES[attributes['hair_style']])}"
                                        if rng.random() < 0.7 else "")
    outfit = f"{c('outfit_color')} {_pick(rng, OUTFITS[attributes['outfit']])}"
    sentences = [
        rng.choice([f"Hair: {hair}; eyes: {c('eye_color')}.", f"{name}'s {hair} is the first thing people notice.",
                    f"Seen from afar, {name} is recognisable by {hair}."]),
        rng.choice([f"Clothing of choice is a {outfit}.", f"A {outfit} is what {name} is drawn in most often.",
                    f"Outfit: {outfit}."]),
        rng.choice([f"The portrait is set against a {BACKDROPS[attributes['background']]} backdrop.",
                    f"Official art always uses a {BACKDROPS[attributes['background']]} background."]),
    ]
    if not sentences[0].startswith("Hair:"):
        sentences.append(rng.choice([f"The eyes are {c('eye_color')}.", f"Eye colour: {c('eye_color')}."]))
    if attributes["accessory"] != "none":
        sentences.append(rng.choice([f"Never without {_pick(rng, ACCESSORIES[attributes['accessory']])}.",
                                     f"Accessory: {_pick(rng, ACCESSORIES[attributes['accessory']])}."]))
    if rng.random() < 0.5:
        sentences.append(f"Skin tone is {SKIN[attributes['skin_tone']]}.")
    if rng.random() < 0.5:
        sentences.append(rng.choice([f"{name} first appears in the third volume.",
                                     "Fans voted this design the most memorable of the series."]))
    rng.shuffle(sentences)
    return " ".join(sentences)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a root written by `animatch synth`")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    src, out = Path(args.data), Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    records = [json.loads(line) for line in (src / "metadata.jsonl").read_text().splitlines() if line.strip()]
    lines = []
    for record in records:
        target = out / record["file_name"]
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src / record["file_name"], target)
        except OSError:
            shutil.copyfile(src / record["file_name"], target)
        name = "".join(rng.choice(SYLLABLES) for _ in range(3)).capitalize()
        temper = rng.sample(TEMPERS, 2)
        lines.append(json.dumps({**{k: v for k, v in record.items() if k not in ("appearance", "personality")},
                                 "character": name, "appearance": appearance(record["attributes"], name, rng),
                                 "personality": f"{name} is {temper[0]} and a little {temper[1]}."}))
    (out / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    print(f"{len(lines)} characters rewritten -> {out}")


if __name__ == "__main__":
    main()
