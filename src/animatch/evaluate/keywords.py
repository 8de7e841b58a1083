"""Appearance keywords: what a character looks like, as a list of short phrases, for keyword Recall@K (judge-eval)
and the judge's keyword descriptions (judge-train's `description_style: keywords`).

`extract_keywords` is a small, dependency-free rule-based extractor of what a
character looks like; its vocabularies are the module-level data below and its rules are:
- text is lowercased; tokens are words (hyphenated words kept whole) and single punctuation marks;
- a colour phrase is a run of colour words, optionally led by a modifier ("light blue", "reddish brown",
  "navy blue"); colours joined by "and" / "or" / "," form a group ("black and white");
- a group followed by a known noun, with at most MAX_GAP other words or commas in between (not function words
  such as "and", "with", "her": GAP_STOPS), gives one "<colour> <noun>" keyword per colour ("long, white hair"
  -> "white hair", "a cerulean hooded jacket" -> "cerulean jacket"); otherwise the group names the body noun
  just before it, across at most MAX_GAP linking words ("eyes: grey", "her eyes are grey", "eye colour:
  cherry-red", "skin tone is light" -> "grey eyes", ..., "light skin"), or else each colour is a keyword by
  itself. A hyphenated word ending in a colour names that colour ("leaf-green"
  -> "green", "chocolate-brown" -> "brown"). "silver-haired" / "blue-eyed" / "fair-skinned" give "silver
  hair" / "blue eyes" / "fair skin", "cream-colored" gives "cream"; "pale skin" / "dark skin" give tone keywords;
- a standalone noun (clothing, accessories, hair styles, features such as "glasses", "twin tails", "cat
  ears", "school uniform") is a keyword by itself, unless the text already named it with a colour; body
  nouns (hair, eyes, skin...) only count with a colour;
- nouns are canonicalised (longest match, plural / singular, spelling aliases: "twintails" -> "twin tails",
  "jewels" -> "jewel", "golden" -> "gold", "gray" -> "grey");
- keywords are returned lowercased, deduplicated, in order of first appearance.
`canonical_keywords` writes them as a keyword description names them (KEYWORD_ORDER, BASIC_COLOURS): the judge's
stage-1 targets and its stage-2 question (`judge.data`, `judge.prompts`); `keyword_overlap` compares a
description with a text that way (judge-eval's overlap AUC), and keyword Recall@K matches keywords as
`canonical_keyword`s (basic colours).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

MAX_GAP = 3


def _terms(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


COLOURS = frozenset(_terms(
    "red, orange, yellow, green, blue, purple, violet, pink, brown, black, white, grey, silver, gold, blonde,"
    "beige, teal, cyan, navy, crimson, scarlet, maroon, magenta, lavender, lilac, turquoise, aqua, amber,"
    "platinum, ivory, cream, tan, indigo, emerald, azure, chestnut, auburn, ginger, copper, khaki, olive,"
    "peach, burgundy, bronze, mint, lime, coral, cerulean, vermilion, periwinkle, mauve, fuchsia, hazel,"
    "charcoal, reddish, orangish, yellowish, greenish, bluish, purplish, pinkish, brownish, blackish,"
    "whitish, greyish"))
COLOUR_ALIASES = {"gray": "grey", "grayish": "greyish", "blond": "blonde", "golden": "gold"}
COLOUR_MODIFIERS = frozenset(_terms(
    "light, dark, pale, bright, deep, sky, baby, hot, pastel, dusty, ash, strawberry, dirty, jet, royal,"
    "neon, dull, icy, ice, blood, midnight, forest, sea, snow, pure, off"))
COLOUR_SUFFIXES = frozenset(_terms("colored, coloured, tinted, toned"))
IMPLIED_NOUNS = {"haired": "hair", "eyed": "eyes", "skinned": "skin"}
SKIN_TONES = {"fair": "fair", "pale": "pale", "dark": "dark", "light": "light", "tan": "tan", "tanned": "tan"}
GROUP_JOINERS = frozenset(_terms("and, or, /, &")) | {","}
DESCRIPTORS = frozenset(_terms(
    "long, short, medium, messy, spiky, wavy, curly, straight, flowing, thick, thin, large, small, big,"
    "little, tiny, huge, round, sharp, striped, plain, simple, frilly, fluffy, loose, tight, high, low, open,"
    "sleeveless, oversized, matching, traditional, casual, formal, elegant, fancy, ornate, decorative,"
    "pleated, lace, leather, silk, metal, metallic, shiny, wide, narrow, usual, typical, signature, cute,"
    "slightly, very, torn, tattered, buttoned, two, twin, pair, single, thigh, knee, ankle"))
# Body nouns (and the portrait's background): a keyword only together with a colour ("green eyes"), never alone.
COLOUR_ONLY_NOUNS = _terms("hair, eyes, skin, pupils, irises, eyebrows, eyelashes, lips, nails, fur, background")
# Words a colour's reach to its noun stops at ("red and she wears a dress"); any other word may stand between
# ("a cerulean hooded jacket", "a navy knight's armour").
GAP_STOPS = frozenset(_terms(
    "and, or, with, without, in, on, of, at, to, for, from, by, into, under, over, behind, like, as, than, but,"
    "that, which, who, whose, when, while, where, her, his, their, its, she, he, they, it, one, is, are, was,"
    "were, be, has, have, had, the, a, an, also, wears, wearing, wore, worn"))
# What may stand between a body noun and the colour that follows it: "eyes: grey", "eyes are grey", "eye colour:
# grey", "skin tone is very pale".
LINKING_WORDS = frozenset(_terms(":, is, are, was, were, a, colour, color, tone, shade, always, usually, both"))
# Standalone nouns by what they name; the order of KEYWORD_ORDER is the order of a keyword description.
HAIR_STYLE_NOUNS = _terms(
    "pigtails, twin tails, ponytail, side ponytail, braid, twin braids, bun, twin buns, bangs, ahoge, bob cut,"
    "drills, mohawk, hime cut, dreadlocks, afro")
FEATURE_NOUNS = _terms(
    "pointed ears, elf ears, cat ears, fox ears, wolf ears, dog ears, bunny ears, rabbit ears, animal ears, horns,"
    "wings, tail, halo, fangs, freckles, scar, tattoo, beauty mark, heterochromia, whiskers, beard, mustache")
WEAR_NOUNS = _terms(  # eyewear, headwear, jewellery
    "glasses, sunglasses, goggles, monocle, eye patch, mask, face mask, hat, cap, beret, witch hat, top hat,"
    "straw hat, helmet, hood, crown, tiara, headband, hair clip, hairpin, hair ornament, hair ribbon, ribbon,"
    "bow, headphones, veil, bandana, bandage, scarf, necktie, tie, bow tie, choker, collar, sailor collar,"
    "necklace, pendant, earrings, bracelet, ring, brooch, amulet, jewel, gem, gemstone")
CLOTHING_NOUNS = _terms(
    "school uniform, sailor uniform, maid outfit, military uniform, uniform, suit, tuxedo, kimono, yukata,"
    "hakama, dress, sundress, gown, robe, tunic, poncho, parka, windbreaker, cloak, cape, coat, lab coat,"
    "trench coat, jacket, blazer, hoodie, sweater,"
    "cardigan, vest, shirt, t-shirt, blouse, tank top, crop top, bodysuit, leotard, jumpsuit, overalls, apron,"
    "skirt, miniskirt, shorts, pants, trousers, jeans, leggings, tights, stockings, pantyhose, socks,"
    "knee socks, thigh highs, boots, shoes, sandals, sneakers, heels, high heels, slippers, gloves,"
    "gauntlets, armor, belt, sash, obi, cuffs, swimsuit, bikini, pajamas")
CARRIED_NOUNS = _terms(
    "staff, sword, katana, wand, spear, shield, scythe, gun, book, bag, briefcase, backpack, umbrella")
STANDALONE_NOUNS = HAIR_STYLE_NOUNS + FEATURE_NOUNS + WEAR_NOUNS + CLOTHING_NOUNS + CARRIED_NOUNS
# How a character is usually described, top to bottom: hair, eyes, skin, clothes, then the rest. A bare
# colour (one the text named without a noun) comes last.
KEYWORD_ORDER = (["hair"] + HAIR_STYLE_NOUNS, ["eyes"], ["skin"], CLOTHING_NOUNS,
                 FEATURE_NOUNS + WEAR_NOUNS + COLOUR_ONLY_NOUNS, CARRIED_NOUNS)
# Shades and their basic colour term: how far a description from an image can tell a colour.
BASIC_COLOURS = {shade: basic for basic, shades in {
    "red": "crimson, scarlet, maroon, burgundy, vermilion, reddish", "orange": "copper, ginger, coral, peach, orangish",
    "yellow": "yellowish", "green": "emerald, lime, olive, mint, greenish",
    "blue": "azure, navy, cerulean, cyan, aqua, turquoise, teal, indigo, periwinkle, bluish",
    "purple": "violet, lavender, lilac, mauve, purplish", "pink": "fuchsia, magenta, pinkish",
    "brown": "chestnut, auburn, hazel, bronze, khaki, tan, beige, brownish", "grey": "charcoal, greyish",
    "white": "ivory, cream, whitish", "black": "blackish", "gold": "amber", "silver": "platinum"}.items()
    for shade in _terms(shades)}
# Plural-looking words whose singular is another word ("shorts" -> "short" would eat "short hair").
NO_SINGULAR = frozenset(_terms(
    "glasses, sunglasses, goggles, shorts, pants, trousers, jeans, leggings, tights, bangs, heels, drills,"
    "pajamas, overalls, thigh highs, whiskers, dreadlocks"))
NO_PLURAL = frozenset({"tie"})  # "ties" is nearly always the verb ("she ties her hair")
NOUN_ALIASES = {
    "twintails": "twin tails", "pig tails": "pigtails", "eyepatch": "eye patch", "hairband": "headband",
    "hair band": "headband", "hairclip": "hair clip", "hair bun": "bun", "armour": "armor",
    "moustache": "mustache", "scarves": "scarf", "thigh high socks": "thigh highs", "tshirt": "t-shirt",
    "spectacles": "glasses", "iris": "irises", "eyeglasses": "glasses", "hair bow": "bow", "pyjamas": "pajamas",
    "backdrop": "background", "muffler": "scarf",
}
_TOKEN = re.compile(r"[a-z]+(?:-[a-z]+)*|[^\sa-z]")


def _surface_forms(noun: str) -> set[str]:
    head, _, last = noun.replace("-", " ").rpartition(" ")
    prefix = f"{head} " if head else ""
    forms = {prefix + last}
    if last.endswith("s") and not last.endswith("ss"):
        if noun not in NO_SINGULAR:
            forms.add(prefix + last[:-1])
    elif noun not in NO_PLURAL:
        forms.add(prefix + last + ("es" if re.search(r"(s|x|ch|sh)$", last) else "s"))
    return forms


def _build_noun_table() -> dict[str, tuple[str, bool]]:
    """surface form (hyphens as spaces) -> (canonical noun, standalone?)."""
    table = {}
    for nouns, standalone in ((COLOUR_ONLY_NOUNS, False), (STANDALONE_NOUNS, True)):
        for noun in nouns:
            for form in _surface_forms(noun):
                table[form] = (noun, standalone)
    for alias, noun in NOUN_ALIASES.items():
        table[alias] = table[noun.replace("-", " ")]
    return table


NOUNS = _build_noun_table()
_MAX_NOUN_WORDS = max(len(form.split()) for form in NOUNS)
_NOUN_RANK: dict[str, int] = {}
for _rank, _nouns in enumerate(KEYWORD_ORDER):
    for _noun in _nouns:
        _NOUN_RANK.setdefault(_noun, _rank)


def _colour_word(word: str) -> str | None:
    word = COLOUR_ALIASES.get(word, word)
    return word if word in COLOURS or word in COLOUR_MODIFIERS else None


def _colour_at(tokens: list[str], i: int) -> tuple[str, str | None, int] | None:
    """(colour phrase, noun implied by a "-haired"/"-eyed"/"-skinned" suffix, next index) or None."""
    words: list[str] = []
    found = None
    for j in range(i, len(tokens)):
        parts = tokens[j].split("-")
        implied = IMPLIED_NOUNS.get(parts[-1]) if len(parts) > 1 else None
        if implied or (len(parts) > 1 and parts[-1] in COLOUR_SUFFIXES):
            parts = parts[:-1]
        if implied == "skin" and not words and len(parts) == 1 and parts[0] in SKIN_TONES:
            return SKIN_TONES[parts[0]], implied, j + 1
        mapped = [_colour_word(p) for p in parts]
        if len(parts) > 1 and mapped[-1] in COLOURS:  # "chocolate-brown", "leaf-green": a shade of the last
            mapped = [m for m in mapped if m is not None]
        if None in mapped:
            break
        words += mapped
        if words[-1] in COLOURS:  # a trailing modifier is no colour ("light armor")
            found = " ".join(words), implied, j + 1
        if implied:
            break
    return found


def _noun_at(tokens: list[str], i: int) -> tuple[str, bool, int] | None:
    for n in range(min(_MAX_NOUN_WORDS, len(tokens) - i), 0, -1):
        entry = NOUNS.get(" ".join(tokens[i:i + n]).replace("-", " "))
        if entry:
            return entry[0], entry[1], i + n
    return None


def _noun_after(tokens: list[str], i: int) -> tuple[str, int] | None:
    for j in range(i, min(len(tokens), i + MAX_GAP + 1)):
        found = _noun_at(tokens, j)
        if found:
            return found[0], found[2]
        if tokens[j] in GAP_STOPS or _colour_word(tokens[j]) or not (tokens[j][0].isalpha() or tokens[j] in ",'"):
            return None
    return None


def _body_noun_before(tokens: list[str], i: int) -> str | None:
    """The body noun (COLOUR_ONLY_NOUNS) that a colour or tone at `i` follows across at most MAX_GAP linking
    words or descriptors ("eyes are grey", "skin tone is very pale"), or None."""
    for j in range(i - 1, max(-1, i - MAX_GAP - 2), -1):
        entry = NOUNS.get(tokens[j])
        if entry:
            return None if entry[1] else entry[0]
        if tokens[j] not in LINKING_WORDS and tokens[j] not in DESCRIPTORS:
            return None
    return None


def _colour_group(tokens: list[str], first: str, i: int) -> tuple[list[str], int]:
    """Colours joined to `first` by "and"/"or"/"/", or by commas when an "and"/"or" closes the list
    ("red, white and blue"); a bare comma separates ("grey, gold eyes" is two things)."""
    group, committed = [first], (1, i)
    while i + 1 < len(tokens) and tokens[i] in GROUP_JOINERS:
        joiner = i + 1 if tokens[i] == "," and tokens[i + 1] in ("and", "or") else i  # Oxford comma
        more = _colour_at(tokens, joiner + 1)
        if not more or more[1]:
            break
        group.append(more[0])
        if tokens[joiner] != ",":
            committed = len(group), more[2]
        i = more[2]
    return group[:committed[0]], committed[1]


def extract_keywords(text: str) -> list[str]:
    """Appearance keywords of `text` (colours, colour + noun phrases, standalone nouns), see module doc."""
    tokens = _TOKEN.findall(text.lower())
    keywords: dict[str, None] = {}
    coloured_nouns: set[str] = set()
    i = 0
    while i < len(tokens):
        colour = _colour_at(tokens, i)
        if colour:
            start = i
            phrase, implied, i = colour
            if implied:
                keywords[f"{phrase} {implied}"] = None
                coloured_nouns.add(implied)
                continue
            group, i = _colour_group(tokens, phrase, i)
            after = _noun_after(tokens, i)
            if after:
                i = after[1]
            noun = after[0] if after else _body_noun_before(tokens, start)
            if noun:
                coloured_nouns.add(noun)
            for phrase in group:
                keywords[f"{phrase} {noun}" if noun else phrase] = None
            continue
        skin_next = tokens[i] in SKIN_TONES and tokens[i + 1:i + 2] == ["skin"]
        if skin_next or tokens[i] in SKIN_TONES and _body_noun_before(tokens, i) == "skin":
            keywords[f"{SKIN_TONES[tokens[i]]} skin"] = None
            i += 1 + skin_next
            continue
        noun = _noun_at(tokens, i)
        if noun:
            if noun[1] and noun[0] not in coloured_nouns:
                keywords[noun[0]] = None
            i = noun[2]
            continue
        i += 1
    return list(keywords)


def canonical_keywords(keywords: Sequence[str]) -> list[str]:
    """`keywords` (of `extract_keywords`) as a description names them: each shade as its basic colour term
    ("azure hair" -> "blue hair", "pastel pink eyes" -> "pink eyes"; skin tones stay), duplicates dropped,
    ordered by KEYWORD_ORDER (hair, eyes, skin, clothes, features and accessories, carried items, bare
    colours), first appearance within a group."""
    return sorted(dict.fromkeys(map(canonical_keyword, keywords)), key=keyword_group)


def canonical_keyword(keyword: str) -> str:
    """One keyword with each shade as its basic colour and no modifier before a colour ("pastel pink eyes" ->
    "pink eyes")."""
    words = keyword.split()
    return " ".join(BASIC_COLOURS.get(w, w) for n, w in enumerate(words)
                    if not (w in COLOUR_MODIFIERS and n + 1 < len(words) and words[n + 1] in COLOURS))


def keyword_group(keyword: str) -> int:
    """The index in KEYWORD_ORDER of the keyword's noun group (by its last words; the earliest when several
    match; len(KEYWORD_ORDER) for a bare colour or an unknown noun)."""
    words = keyword.split()
    ends = (" ".join(words[-n:]) for n in range(1, min(len(words), _MAX_NOUN_WORDS) + 1))
    return min((_NOUN_RANK[end] for end in ends if end in _NOUN_RANK), default=len(KEYWORD_ORDER))


def keyword_recall_at_k(generated: str, reference: str, k: int) -> float | None:
    """Fraction of the reference's keywords that are among the first `k` keywords of the generated text, both
    as `canonical_keyword`s (a description that says "blue hair" names the reference's "navy hair": which shade
    a text chose, an image cannot show). None when the reference has no keyword: callers skip such pairs."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    wanted = _canonical_in_order(reference)
    if not wanted:
        return None
    found = set(_canonical_in_order(generated)[:k])
    return sum(w in found for w in wanted) / len(wanted)


def _canonical_in_order(text: str) -> list[str]:
    """`text`'s keywords as `canonical_keyword`s, deduplicated, in the order the text names them."""
    return list(dict.fromkeys(map(canonical_keyword, extract_keywords(text))))


def keyword_overlap(description: str, text: str) -> int:
    """How many of `text`'s appearance keywords `description` names, both as `canonical_keywords` (so "blue
    hair" names "azure hair"): a comparison of a description with a candidate text that needs no learning."""
    return len(set(canonical_keywords(extract_keywords(description))) &
               set(canonical_keywords(extract_keywords(text))))


def corpus_keyword_recall_at_k(generated: Sequence[str], references: Sequence[str],
                               k: int) -> tuple[float | None, int]:
    """(mean keyword recall@k over the pairs whose reference has keywords, number of pairs skipped);
    the mean is None when every pair is skipped."""
    check_pairs(generated, references)
    scores = [keyword_recall_at_k(g, r, k) for g, r in zip(generated, references)]
    kept = [s for s in scores if s is not None]
    return (math.fsum(kept) / len(kept) if kept else None), len(scores) - len(kept)


def check_pairs(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    """Every corpus measure compares hypotheses and references one to one."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
