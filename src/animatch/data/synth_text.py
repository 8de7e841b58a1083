"""The words of the synthetic dataset: attribute vocabulary, attribute -> phrase mapping, and the text generators.

`ATTRIBUTES` is the vocabulary of what `synth_draw` draws; `COLOR_WORDS`, `HAIR_PHRASES`, `OUTFIT_PHRASES`
and `ACCESSORY_PHRASES` say how each value is written (the first variant is the canonical one, used by
`query_text` for attribute searches). `appearance_sentences` writes a wiki-like appearance section as
`Sentence`s that record which attributes each sentence states, so later jobs can corrupt one sentence
(audit) or swap descriptions; `describe` joins them. Personality text is random and never visible.
"""

from __future__ import annotations

import random
import re
from typing import NamedTuple

# Every value here is drawn by animatch.data.synth_draw; "background" is drawn but never described.
ATTRIBUTES: dict[str, list[str]] = {
    "hair_color": ["black", "brown", "blonde", "red", "orange", "pink", "purple", "blue", "green", "silver"],
    "hair_style": ["long", "short", "twin tails", "ponytail", "bob", "spiky"],
    "eye_color": ["brown", "blue", "green", "red", "purple", "gold", "gray", "pink"],
    "outfit": ["dress", "school uniform", "kimono", "armor", "hoodie", "suit"],
    "outfit_color": ["black", "white", "red", "blue", "green", "yellow", "purple", "pink", "orange", "gray"],
    "accessory": ["none", "glasses", "hat", "ribbon", "cat ears", "scarf"],
    "skin_tone": ["fair", "light", "tan", "dark"],
    "background": ["sky", "peach", "mint", "lavender", "cream", "rose", "teal", "sand"],
}
# The attributes an appearance text states (a character is identified by these).
DESCRIBED = ("hair_color", "hair_style", "eye_color", "outfit", "outfit_color", "accessory", "skin_tone")

COLOR_WORDS: dict[str, list[str]] = {
    "black": ["black", "jet-black", "raven-black"], "brown": ["brown", "chestnut", "chocolate-brown"],
    "blonde": ["blonde", "golden", "blond"], "red": ["red", "crimson", "scarlet"],
    "orange": ["orange", "tangerine", "bright orange"], "pink": ["pink", "rose-pink", "pastel pink"],
    "purple": ["purple", "violet", "plum"], "blue": ["blue", "azure", "cobalt"],
    "green": ["green", "emerald", "leaf-green"], "silver": ["silver", "silvery", "platinum"],
    "gold": ["gold", "golden", "amber"], "gray": ["gray", "grey", "slate-gray"],
    "white": ["white", "snow-white", "ivory"], "yellow": ["yellow", "lemon-yellow", "sunflower-yellow"],
}
HAIR_PHRASES: dict[str, list[str]] = {
    "long": ["long {c} hair", "{c} hair that reaches down to {his} waist", "waist-length {c} hair",
             "long, flowing {c} hair"],
    "short": ["short {c} hair", "cropped {c} hair", "short, messy {c} hair", "neatly cut short {c} hair"],
    "twin tails": ["{c} hair tied into twin tails", "{c} hair worn in two high pigtails",
                   "long {c} twin tails", "{c} twintails held by round hair ties"],
    "ponytail": ["{c} hair tied back in a ponytail", "a high {c} ponytail", "{c} hair gathered into a ponytail"],
    "bob": ["{c} hair cut in a bob", "a chin-length {c} bob", "bob-cut {c} hair with a straight fringe"],
    "spiky": ["spiky {c} hair", "wild, spiky {c} hair", "{c} hair that sticks out in sharp spikes"],
}
OUTFIT_PHRASES: dict[str, list[str]] = {
    "dress": ["a {c} dress", "a flowing {c} dress", "a knee-length {c} dress with a flared skirt"],
    "school uniform": ["a {c} school uniform", "a {c} sailor-style school uniform",
                       "the {c} uniform of {his} school"],
    "kimono": ["a {c} kimono", "a traditional {c} kimono tied with a wide obi", "a {c} kimono with long sleeves"],
    "armor": ["{c} armor", "a set of {c} plate armor", "{c} armor with heavy shoulder guards"],
    "hoodie": ["a {c} hoodie", "an oversized {c} hoodie", "a {c} hooded sweatshirt with a front pocket"],
    "suit": ["a {c} suit", "a tailored {c} suit with a tie", "a {c} business suit"],
}
ACCESSORY_PHRASES: dict[str, list[str]] = {
    "glasses": ["glasses", "a pair of round glasses", "thin-framed glasses"],
    "hat": ["a hat", "a wide-brimmed hat", "a brown hat"],
    "ribbon": ["a ribbon", "a large ribbon in {his} hair", "a bow-shaped hair ribbon"],
    "cat ears": ["cat ears", "a pair of cat ears", "pointed cat ears"],
    "scarf": ["a scarf", "a striped scarf around {his} neck", "a long knitted scarf"],
}
SKIN_PHRASES = {"fair": ["fair skin", "pale skin"], "light": ["light skin", "a light complexion"],
                "tan": ["tanned skin", "sun-kissed skin"], "dark": ["dark skin", "a dark complexion"]}
EYE_PHRASES = ["{c} eyes", "bright {c} eyes", "large {c} eyes", "{c}-colored eyes"]

PRONOUNS = {"she": {"he": "she", "him": "her", "his": "her"}, "he": {"he": "he", "him": "him", "his": "his"}}
BUILDS = ["petite", "tall", "slender", "young", "cheerful-looking", "short", "athletic", "graceful"]
NOUNS = {"she": ["girl", "young woman", "woman"], "he": ["boy", "young man", "man"]}
FILLERS = [
    "{N} is said to stand about {h} cm tall.", "{He} has a small mole that is rarely shown in the anime.",
    "{His} character design was slightly changed between the first and second seasons.",
    "In the manga, {his} clothes are drawn with more detailed trims.",
    "{He} usually carries a worn notebook in which {he} writes down everything.",
    "During the summer festival arc, {he} briefly appears in different clothes.",
    "{N}'s appearance is based on the author's sketches from a one-shot story.",
    "As a child, {he} looked much the same, only smaller.",
    "In the spin-off, {his} look is simplified to match the chibi art style.",
    "{He} is often mistaken for someone younger than {he} really is.",
]
TRAITS = ["kind", "stubborn", "cheerful", "shy", "arrogant", "loyal", "lazy", "hard-working", "curious",
          "reckless", "calm", "hot-headed", "cunning", "gentle", "proud", "clumsy", "serious", "playful",
          "honest", "secretive", "brave", "timid", "ambitious", "easy-going", "sarcastic", "caring"]
PERSONALITY_TEMPLATES = [
    "{N} is {a} and {b}, although {he} can be {c} when pushed.",
    "Although {he} often appears {a}, {N} is deeply {b} toward {his} friends.",
    "{He} is known for being {a}; {his} classmates also describe {him} as {b} and a little {c}.",
    "{N} is a {a} person who rarely shows how {b} {he} really is.",
    "Being {a} by nature, {he} tends to act before thinking, which gets {him} into trouble.",
    "{His} {a} attitude hides a {b} side that only {his} closest friends know.",
]
PERSONALITY_FILLERS = [
    "{He} loves sweets and often spends {his} allowance on them.", "{He} hates being called by {his} full name.",
    "{He} has a habit of humming when {he} is nervous.", "{He} dreams of travelling the world one day.",
    "{He} is terrible at cooking but refuses to admit it.", "{He} gets along well with animals.",
]


_AN = re.compile(r"\b([Aa]) (?!one)([aeioAEIO])")


class Sentence(NamedTuple):
    """One sentence of an appearance text and the attribute names it states (empty for filler)."""
    text: str
    attributes: tuple[str, ...]


def _fill(template: str, name: str, pronoun: str, **kw: str) -> str:
    """Fill {N} (the name; later sentences of a text pass the first name), pronouns and `kw`; fix articles."""
    p = PRONOUNS[pronoun]
    words = {"N": name, "he": p["he"], "him": p["him"], "his": p["his"], "He": p["he"].capitalize(),
             "His": p["his"].capitalize(), **kw}
    text = _AN.sub(r"\1n \2", template.format(**words))
    return text[0].upper() + text[1:]


def attribute_phrase(attr: str, attributes: dict, rng: random.Random | None = None, pronoun: str = "she") -> str:
    """How one attribute (hair = colour + style, outfit = type + colour) is written; canonical without rng."""
    pick = (lambda xs: xs[0]) if rng is None else rng.choice
    his = PRONOUNS[pronoun]["his"]
    if attr in ("hair_color", "hair_style"):
        return pick(HAIR_PHRASES[attributes["hair_style"]]).format(c=pick(COLOR_WORDS[attributes["hair_color"]]),
                                                                  his=his)
    if attr == "eye_color":
        return pick(EYE_PHRASES).format(c=pick(COLOR_WORDS[attributes["eye_color"]]))
    if attr in ("outfit", "outfit_color"):
        return pick(OUTFIT_PHRASES[attributes["outfit"]]).format(c=pick(COLOR_WORDS[attributes["outfit_color"]]),
                                                                his=his)
    if attr == "accessory":
        return pick(ACCESSORY_PHRASES[attributes["accessory"]]).format(his=his)
    if attr == "skin_tone":
        return pick(SKIN_PHRASES[attributes["skin_tone"]])
    raise KeyError(attr)


def query_text(attributes: dict) -> str:
    """A short attribute query such as "silver hair twin tails blue eyes"; any subset of attributes works."""
    words = []
    if "hair_color" in attributes:
        words.append(f"{attributes['hair_color']} hair")
    if "hair_style" in attributes:
        words.append(f"{attributes['hair_style']} hair" if attributes["hair_style"] in ("long", "short", "spiky")
                     else attributes["hair_style"])
    if "eye_color" in attributes:
        words.append(f"{attributes['eye_color']} eyes")
    outfit = " ".join(attributes[k] for k in ("outfit_color", "outfit") if k in attributes)
    if outfit:
        words.append(outfit)
    if attributes.get("accessory", "none") != "none":
        words.append(attributes["accessory"])
    if "skin_tone" in attributes:
        words.append(f"{attributes['skin_tone']} skin")
    return " ".join(words)


def appearance_sentences(attributes: dict, rng: random.Random, name: str = "She",
                         pronoun: str = "she") -> list[Sentence]:
    """A wiki-like appearance section in varying order and words, with non-visual filler sentences.

    Hair, eyes and outfit are always stated, the accessory in 9 of 10 texts, the skin tone in half of them.
    """
    def ph(attr: str) -> str:
        return attribute_phrase(attr, attributes, rng, pronoun)

    first = name.split()[0]

    def f(template: str, **kw: str) -> str:
        return _fill(template, first, pronoun, **kw)

    hair, eyes, outfit = ph("hair_color"), ph("eye_color"), ph("outfit")
    build, noun = rng.choice(BUILDS), rng.choice(NOUNS[pronoun])
    opening = rng.choice([
        (_fill("{N} is a {b} {n} with {x} and {y}.", name, pronoun, b=build, n=noun, x=hair, y=eyes),
         ("hair_color", "hair_style", "eye_color")),
        (_fill("{N} is a {b} {n} with {x}.", name, pronoun, b=build, n=noun, x=hair), ("hair_color",
                                                                                       "hair_style")),
        (_fill("{N} has {x}.", name, pronoun, x=hair), ("hair_color", "hair_style")),
        (_fill("{N} is a {b} {n} who is usually seen wearing {x}.", name, pronoun, b=build, n=noun, x=outfit),
         ("outfit", "outfit_color")),
    ])
    said = set(opening[1])
    body: list[Sentence] = []
    if "hair_style" not in said:
        body.append(Sentence(f(rng.choice(["{He} has {x}.", "{His} most striking feature is {x}."]), x=hair),
                             ("hair_color", "hair_style")))
    if "eye_color" not in said:
        body.append(Sentence(f(rng.choice(["{He} has {x}.", "{His} eyes are {c}.",
                                           "{N} looks at the world with {x}."]),
                               x=eyes, c=rng.choice(COLOR_WORDS[attributes["eye_color"]])), ("eye_color",)))
    if "outfit" not in said:
        body.append(Sentence(f(rng.choice([
            "{He} wears {x}.", "{His} usual attire consists of {x}.", "{He} is almost always dressed in {x}.",
            ("Whether at home or out on an adventure, {he} wears {x}, which {he} keeps carefully clean and "
             "has owned since the start of the story."), "{His} outfit is {x}."]), x=outfit),
            ("outfit", "outfit_color")))
    if attributes["accessory"] != "none" and rng.random() < 0.9:
        body.append(Sentence(f(rng.choice(["{He} also wears {x}.", "{He} is rarely seen without {x}.",
                                           "A notable detail of {his} look is {x}.",
                                           "{He} completes {his} look with {x}."]), x=ph("accessory")),
                             ("accessory",)))
    if rng.random() < 0.5:
        skin = ph("skin_tone")
        templates = ["{He} has {x}.", "{N} has {x} and a round face."]
        if not skin.startswith("a "):
            templates.append("{His} {x} is often commented on by other characters.")
        body.append(Sentence(f(rng.choice(templates), x=skin), ("skin_tone",)))
    rng.shuffle(body)
    fillers = [Sentence(f(t, h=str(rng.randint(145, 190))), ()) for t in rng.sample(FILLERS, rng.randint(0, 3))]
    sentences = [Sentence(*opening)] + body
    for filler in fillers:
        sentences.insert(rng.randint(1, len(sentences)), filler)
    return sentences


def describe(attributes: dict, rng: random.Random, name: str = "She", pronoun: str = "she") -> str:
    """Appearance text of a character (sentences, sometimes split into paragraphs like wiki text)."""
    sentences = [s.text for s in appearance_sentences(attributes, rng, name, pronoun)]
    if len(sentences) > 4 and rng.random() < 0.5:
        cut = rng.randint(2, len(sentences) - 2)
        return " ".join(sentences[:cut]) + "\n" + " ".join(sentences[cut:])
    return " ".join(sentences)


def describe_personality(rng: random.Random, name: str, pronoun: str = "she") -> str:
    """Personality text: random traits, unrelated to the look (nothing here is visible in the image)."""
    first = name.split()[0]
    traits = rng.sample(TRAITS, 6)
    parts = [_fill(t, first, pronoun, a=traits[3 * i], b=traits[3 * i + 1], c=traits[3 * i + 2])
             for i, t in enumerate(rng.sample(PERSONALITY_TEMPLATES, rng.randint(1, 2)))]
    parts += [_fill(t, first, pronoun) for t in rng.sample(PERSONALITY_FILLERS, rng.randint(0, 2))]
    return " ".join(parts)
