"""Text cleaning, the "is this really an appearance?" rule, and CLIP-sized appearance chunks.

`clean_text` turns scraped Fandom text into plain prose: citation markers ([7], [citation needed],
[note 1]), edit links and stray wiki lines (Edit, Gallery) go, spaces left before punctuation by removed
links ("a mage , she") are closed, whitespace is normalised. Paragraphs are KEPT, one per line: in this
dataset a paragraph usually describes one look (an outfit, an era), so chunks never straddle two.
`non_appearance_reason` is the documented rule that rejects texts like the dataset's Angewomon example (an
"Attacks" section). `appearance_chunks` cuts a text into sentence groups that each fit CLIP's 77-token
context; by default lengths come from `estimate_clip_tokens`, an offline upper bound of CLIP's BPE count,
or from a real tokenizer via `tokenizer_token_counter`. `chunk_windows` turns chunks into the text views
CLIP is trained and evaluated on: each chunk followed by the next ones, for the tokenizer to cut at 77.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Callable

from animatch.errors import UserError

TokenCounter = Callable[[str], int]

# Words checked to be ONE token in CLIP's BPE vocabulary (openai/clip-vit-*; the same merges as
# open_clip's bpe_simple_vocab_16e6). Any other word is estimated from its length, see estimate_clip_tokens.
_SINGLE_TOKEN_WORDS_TEXT = """
    a about above academy accessory across after again age all along also although always am amber an and
    angel animal anime another any appear appearance appears apron are arm armor armour arms around as at
    attire back bangs be beautiful because been before behind beige being below belt beside between big
    black blond blonde blouse blue body boots both bottom bow bows boy bracelet braid braids bright brown
    build bun buns but button buttons by can cap cape carries carrying cat character characters cheek cheeks
    chest child children clip clips cloak clothes clothing coat collar color colored colors colour coloured
    colours complexion could cream creature crimson crown cuffs curly cute dark day days deep demon design
    did do does dog done down dress dressed dresses during each ear earring earrings ears edge eight elf
    emerald end episode even every eye eyebrow eyebrows eyes face fair feet female few figure finger fingers
    first five foot for forehead form four fringe from front full girl gives glasses gloves god gold golden
    gray green grey had hair half hand hands handsome has hat have having he head headband heavy height
    helmet her hero heroes hers herself high him himself his holding holds hood hoodie horn horns how human
    i if in indigo into iris is it its itself ivory jacket jewel jewels just kimono lace large last lavender
    layer layers least left leg legs less light like line lines lips little lock locks long look looking
    looks loose low magenta male man manga many mark marks maroon mask may me medium men messy middle might
    more most mouth much muscular must my narrow navy neat neck necklace never new next nine no nor nose not
    of off often old on once one only onto or orange other our out outfit outfits over own pair pale pants
    part parts pattern people person petite piece pink plain pocket pockets pointed ponytail pretty pupils
    purple red resemble resembles ribbon ribbons right ring rings robe robes round same sandals scar scarf
    scarlet school season second seen series set seven shape sharp she shirt shirts shoes short shorts
    should shoulder shoulders shown side silver simple since six skin skirt sleeve sleeves slender slim
    small so socks soft some sometimes staff still stockings straight striped strong student students style
    such suit sweater sword tail tall tan tattoo teal teeth ten than that the their theirs them themselves
    then these they thick thin third this those though three through tie tied ties tight tights time times
    tip to too top trim trousers tucked turquoise two under uniform until up us usually very vest violet
    waist was wavy way we weapon wear wearing wears weight well were what when where which while white who
    whom whose why wide will wings with without woman women wore worn would year years yellow you young your
"""
SINGLE_TOKEN_WORDS = frozenset(_SINGLE_TOKEN_WORDS_TEXT.split())

# CLIP's pre-tokenizer (lower-cased text): contractions, letter runs, single digits, punctuation runs.
_PRETOKEN = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+")
START_END_TOKENS = 2
_MIN_BUDGET = 8

_CITATION = re.compile(
    r"\s*\[(?:\d+|[a-z]|(?:note|nb|n)\s*\d+|[^\[\]\n]{0,40}\bneeded|citation[^\[\]\n]{0,30}|edit|\s*)\]",
    re.IGNORECASE)
_ARTEFACT_LINE = re.compile(
    r"(?:edit|gallery|(?:view|see) gallery|appearances?|main articles?:.*|see also:.*)", re.IGNORECASE)
_INVISIBLE = re.compile(r"[\u200b\u200c\u200d\u2060\ufeff\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+(?=[,.;:!?%)\]}]|'s\b|n't\b)")
_SPACE_AFTER_OPEN = re.compile(r"([(\[{])\s+")

# Headers of wiki sections that are not an appearance; a text that opens with one is rejected.
NON_APPEARANCE_HEADERS = frozenset({
    "abilities", "abilities and powers", "arts", "attacks", "attacks and techniques", "background",
    "biography", "equipment", "etymology", "history", "magic", "moves", "personality", "plot", "powers",
    "powers and abilities", "quotes", "relationships", "signature moves", "skills", "special attacks",
    "special moves", "spells", "statistics", "stats", "story", "synopsis", "techniques", "trivia", "weapons",
})
# "Holy Arrow : Attacks with ..." - a short name, a colon, then a capitalised verb in the third person.
_MOVE_ENTRY = re.compile(r"^[\"“']?[A-Z0-9][^.!?:\n]{0,60}:\s*[A-Z][a-z]+s\s+\w")
_SENTENCE_END = re.compile(r"([.!?]+[\"'”’)\]]*)\s+(?=[\"'“‘(\[]?[A-Z0-9])")
_CLAUSE_END = re.compile(r"(?<=[,;:])\s+")


def clean_text(s: str) -> str:
    """Plain prose from a scraped wiki text; paragraphs kept, one per line, no blank lines."""
    s = unicodedata.normalize("NFC", html.unescape(s or ""))
    s = _INVISIBLE.sub("", s.replace("\r\n", "\n").replace("\r", "\n"))
    s = _CITATION.sub("", s)
    lines = []
    for line in s.split("\n"):
        line = " ".join(line.split())
        line = _SPACE_AFTER_OPEN.sub(r"\1", _SPACE_BEFORE_PUNCT.sub("", line))
        if line and not _ARTEFACT_LINE.fullmatch(line):
            lines.append(line)
    return "\n".join(lines)


def split_sentences(paragraph: str) -> list[str]:
    """Sentences of one paragraph: cut after . ! ? (and closing quotes) before a capital or a digit."""
    sentences, start = [], 0
    for m in _SENTENCE_END.finditer(paragraph):
        sentences.append(paragraph[start:m.end(1)])
        start = m.end()
    sentences.append(paragraph[start:])
    return [s.strip() for s in sentences if s.strip()]


def non_appearance_reason(text: str) -> str | None:
    """Why a cleaned "appearance" text is not one, or None when it looks like a description.

    The rule (from the dataset's own Angewomon example, whose appearance is an "Attacks" section):
    rejected when its first line is a known non-appearance section header (NON_APPEARANCE_HEADERS, e.g.
    Attacks, Abilities, Techniques, Powers), or when at least half of its sentences are move entries of the
    form "Name : Verbs ..." ("Holy Arrow : Attacks with a powerful ..."). Descriptions almost never open
    with such a header nor consist of "Name: Does ..." lines, so real appearances pass.
    """
    paragraphs = text.split("\n")
    first = paragraphs[0].strip().rstrip(":").strip() if paragraphs else ""
    if first.lower() in NON_APPEARANCE_HEADERS:
        return f"not an appearance: starts with the section header {first!r}"
    sentences = [s for p in paragraphs for s in split_sentences(p)]
    moves = sum(bool(_MOVE_ENTRY.match(s)) for s in sentences)
    if sentences and moves * 2 >= len(sentences):
        return f"not an appearance: {moves} of {len(sentences)} sentences are move entries ('Name: Does ...')"
    return None


def estimate_clip_tokens(text: str) -> int:
    """An offline upper bound of len(CLIP tokenizer(text)) for English text, start and end tokens included.

    Mirrors CLIP's pre-tokenizer (lower-cased; contractions, letter runs, single digits and punctuation
    runs are separate pieces; BPE never merges across pieces) and bounds each piece: a word of
    SINGLE_TOKEN_WORDS is 1 token; any other ASCII word of n letters ceil((n+1)/2) tokens; anything else
    (punctuation, non-ASCII words) one token per UTF-8 byte, BPE's worst case. Checked against the real
    CLIP BPE: the bound held for every word of ~11k words of English prose and for all but 6 of 18k random
    romanised Japanese names (a text as a whole is safe: common words leave slack); on appearance prose it
    overestimates by ~1.4x, so chunks come out somewhat shorter than with `--tokenizer`.
    """
    n = START_END_TOKENS
    for piece in _PRETOKEN.findall(text.lower()):
        if piece.isascii() and piece.isalpha():
            n += 1 if piece in SINGLE_TOKEN_WORDS else (len(piece) + 2) // 2
        elif piece[0] == "'" and len(piece) <= 3 and piece[1:].isalpha():
            n += 1
        else:
            n += len(piece.encode("utf-8"))
    return n


def tokenizer_token_counter(tokenizer: str) -> TokenCounter:
    """Exact token counts (start and end included) from a tokenizer dir or hub id; UserError if unloadable."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(tokenizer)
    except Exception as e:
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"cannot load tokenizer {tokenizer!r}: {detail}") from None
    return lambda s: len(tok(s, add_special_tokens=True, truncation=False, verbose=False)["input_ids"])


def appearance_chunks(text: str, max_tokens: int = 77, count_tokens: TokenCounter | None = None) -> list[str]:
    """Sentence chunks of `text`, each at most `max_tokens` tokens (start/end included) by `count_tokens`.

    Within each paragraph, sentences are merged greedily while the merge fits; a sentence that alone is
    too long is cut at clause punctuation (, ; :), then between words, then (a absurdly long "word") inside
    it. Chunks never straddle paragraphs. Default counter: `estimate_clip_tokens`.
    """
    if max_tokens < _MIN_BUDGET:
        raise ValueError(f"max_tokens must be at least {_MIN_BUDGET}, got {max_tokens}")
    count = count_tokens or estimate_clip_tokens
    chunks: list[str] = []
    for paragraph in text.split("\n"):
        pieces = [p for s in split_sentences(paragraph) for p in _fit(s, max_tokens, count, 0)]
        chunks.extend(_merge(pieces, max_tokens, count))
    return chunks


def _merge(parts: list[str], budget: int, count: TokenCounter) -> list[str]:
    merged: list[str] = []
    for part in parts:
        if merged and count(candidate := f"{merged[-1]} {part}") <= budget:
            merged[-1] = candidate
        else:
            merged.append(part)
    return merged


def _fit(text: str, budget: int, count: TokenCounter, level: int) -> list[str]:
    """`text` as pieces that each fit: split at clauses (level 0), words (1), characters (2)."""
    if count(text) <= budget:
        return [text]
    if level >= 2:
        return _split_characters(text, budget, count)
    parts = _CLAUSE_END.split(text) if level == 0 else text.split()
    if len(parts) == 1:
        return _fit(text, budget, count, level + 1)
    return _merge([p for part in parts for p in _fit(part, budget, count, level + 1)], budget, count)


def _split_characters(word: str, budget: int, count: TokenCounter) -> list[str]:
    pieces = []
    while word:
        n = len(word)
        while n > 1 and (tokens := count(word[:n])) > budget:
            # shrink in proportion to the excess, at least one character per step
            n = max(1, min(n - 1, n * (budget - START_END_TOKENS) // max(1, tokens - START_END_TOKENS)))
        pieces.append(word[:n])
        word = word[n:]
    return pieces


def chunk_windows(chunks: list[str]) -> list[str]:
    """One view per chunk: the text from that chunk on, wrapping round to the first (the tokenizer cuts it
    at the model's context). A lone chunk's view is itself.

    Measured on synthetic personas (docs/BENCHMARKS.md): a small CLIP learns far faster from these full
    views than from single chunks (a chunk names only some of what the image shows), while starting at a
    random chunk still keeps the first sentence from becoming a shortcut; pooling the views at test time
    gives every sentence a place near the start of some view, where truncation never cuts it.
    """
    return [" ".join(chunks[i:] + chunks[:i]) for i in range(len(chunks))]
