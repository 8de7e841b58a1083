"""Procedural portraits of synthetic characters: every attribute in `synth_text.ATTRIBUTES` drawn visibly.

`draw_character(attributes, size, seed)` draws a portrait `size` wide and 1.5x as tall on a 100 x 150 unit
canvas, twice the target size, then downsamples (anti-aliasing). Everything that identifies a character
(hair, eyes, outfit, accessory, skin) lies in the central square, so a CLIP-style centre crop keeps it.
The seed only jitters proportions slightly; colours are exact RGB values from the tables here, so tests
can find e.g. the hair colour among the pixels.
"""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

HAIR_RGB = {"black": (30, 30, 36), "brown": (110, 66, 36), "blonde": (240, 210, 100), "red": (200, 30, 40),
            "orange": (245, 130, 30), "pink": (245, 140, 185), "purple": (130, 60, 170), "blue": (40, 90, 210),
            "green": (40, 160, 80), "silver": (200, 205, 215)}
EYE_RGB = {"brown": (120, 70, 30), "blue": (30, 110, 230), "green": (30, 170, 70), "red": (210, 20, 30),
           "purple": (140, 50, 190), "gold": (230, 170, 20), "gray": (120, 125, 135), "pink": (240, 100, 170)}
OUTFIT_RGB = {"black": (35, 35, 40), "white": (245, 245, 240), "red": (205, 35, 45), "blue": (40, 80, 200),
              "green": (35, 140, 60), "yellow": (245, 215, 40), "purple": (120, 50, 160),
              "pink": (240, 130, 180), "orange": (240, 120, 30), "gray": (130, 130, 135)}
SKIN_RGB = {"fair": (255, 230, 215), "light": (240, 200, 165), "tan": (205, 150, 105), "dark": (135, 90, 62)}
BACKGROUND_RGB = {"sky": (200, 225, 250), "peach": (255, 220, 195), "mint": (205, 245, 220),
                  "lavender": (225, 215, 250), "cream": (250, 245, 220), "rose": (250, 215, 225),
                  "teal": (175, 220, 220), "sand": (225, 210, 180)}
OUTLINE = (40, 30, 30)
SUPERSAMPLE = 2


def _shade(rgb: tuple, f: float) -> tuple:
    return tuple(max(0, min(255, int(c * f))) for c in rgb)


def _contrast(rgb: tuple, a: tuple, b: tuple) -> tuple:
    """Whichever of a, b is farther from rgb (so a detail never vanishes into its neighbour)."""
    return max((a, b), key=lambda c: sum((x - y) ** 2 for x, y in zip(c, rgb)))


class _Canvas:
    """Draws on unit coordinates (x 0-100, y 0-150)."""

    def __init__(self, width: int, background: tuple):
        self.s = width * SUPERSAMPLE / 100
        self.img = Image.new("RGB", (width * SUPERSAMPLE, width * 3 // 2 * SUPERSAMPLE), background)
        self.d = ImageDraw.Draw(self.img)

    def _p(self, pts):
        return [(x * self.s, y * self.s) for x, y in pts]

    def ellipse(self, cx, cy, rx, ry, fill, outline=None, width=0.0):
        self.d.ellipse(self._p([(cx - rx, cy - ry), (cx + rx, cy + ry)]), fill=fill, outline=outline,
                       width=max(1, round(width * self.s)) if outline else 0)

    def poly(self, pts, fill, outline=None):
        self.d.polygon(self._p(pts), fill=fill, outline=outline)

    def rect(self, x0, y0, x1, y1, fill):
        self.d.rectangle(self._p([(x0, y0), (x1, y1)]), fill=fill)

    def line(self, pts, fill, width):
        self.d.line(self._p(pts), fill=fill, width=max(1, round(width * self.s)))


def _hair_back(c: _Canvas, style: str, rgb: tuple, hx: float, hy: float, length: float) -> None:
    if style == "long":
        c.poly([(hx - 20, hy - 8), (hx + 20, hy - 8), (hx + 24, hy + 58 + length), (hx - 24, hy + 58 + length)], rgb)
    elif style == "bob":
        c.ellipse(hx, hy + 2, 22, 24, rgb)
        c.rect(hx - 22, hy, hx + 22, hy + 22, rgb)
    elif style == "twin tails":
        for side in (-1, 1):
            c.ellipse(hx + side * 24, hy + 22 + length / 2, 7, 26 + length / 2, rgb)
    elif style == "ponytail":
        c.ellipse(hx + 22, hy + 14 + length / 3, 8, 22 + length / 3, rgb)
    c.ellipse(hx, hy - 3, 20, 20, rgb)  # the crown, behind the face


def _hair_front(c: _Canvas, style: str, rgb: tuple, hx: float, hy: float) -> None:
    top = hy - 21
    if style == "spiky":
        spikes = [(hx - 26, hy - 4), (hx - 22, top - 2), (hx - 14, top - 12), (hx - 6, top - 3), (hx, top - 16),
                  (hx + 6, top - 3), (hx + 14, top - 12), (hx + 22, top - 2), (hx + 26, hy - 4)]
        c.poly(spikes + [(hx + 14, hy - 8), (hx + 8, hy - 4), (hx, hy - 9), (hx - 8, hy - 4), (hx - 14, hy - 8)],
               rgb)
    elif style == "bob":
        c.poly([(hx - 19, hy - 6), (hx - 18, top + 2), (hx, top - 2), (hx + 18, top + 2), (hx + 19, hy - 6)], rgb)
    else:
        c.poly([(hx - 19, hy), (hx - 18, top + 4), (hx, top - 1), (hx + 18, top + 4), (hx + 19, hy),
                (hx + 12, hy - 9), (hx + 5, hy - 5), (hx - 2, hy - 10), (hx - 9, hy - 5), (hx - 14, hy - 9)], rgb)
    if style in ("twin tails", "ponytail"):
        tie = _contrast(rgb, (230, 40, 60), (250, 250, 250))
        for x in ((hx - 19, hx + 19) if style == "twin tails" else (hx + 19,)):
            c.ellipse(x, hy - 4, 2.5, 2.5, tie)


def _outfit(c: _Canvas, outfit: str, rgb: tuple, skin: tuple, x: float) -> None:
    dark, light = _shade(rgb, 0.6), _shade(rgb, 1.35)
    if outfit == "kimono":  # wide sleeves
        c.poly([(x - 22, 92), (x - 36, 150), (x + 36, 150), (x + 22, 92)], dark)
    c.poly([(x - 20, 88), (x + 20, 88), (x + 26, 150), (x - 26, 150)], rgb)
    c.ellipse(x - 20, 94, 7, 7, rgb)
    c.ellipse(x + 20, 94, 7, 7, rgb)
    if outfit == "dress":
        c.poly([(x - 18, 118), (x + 18, 118), (x + 34, 150), (x - 34, 150)], rgb)
        c.ellipse(x, 88, 9, 6, skin)
        c.line([(x - 17, 118), (x + 17, 118)], dark, 2)
    elif outfit == "school uniform":
        collar = _contrast(rgb, (250, 250, 250), (30, 40, 90))
        c.poly([(x - 22, 88), (x + 22, 88), (x + 16, 104), (x, 110), (x - 16, 104)], collar)
        c.poly([(x - 8, 88), (x + 8, 88), (x, 102)], skin)
        c.poly([(x - 5, 104), (x + 5, 104), (x, 118)], _contrast(rgb, (220, 30, 40), (30, 40, 90)))
    elif outfit == "kimono":
        c.poly([(x - 10, 88), (x - 4, 88), (x + 10, 116), (x + 4, 116)], (250, 250, 250))
        c.poly([(x + 10, 88), (x + 4, 88), (x - 10, 116), (x - 4, 116)], (250, 250, 250))
        c.rect(x - 23, 114, x + 23, 126, _contrast(rgb, (215, 175, 55), (120, 20, 40)))
    elif outfit == "armor":
        c.ellipse(x - 22, 95, 11, 9, light, OUTLINE, 0.8)
        c.ellipse(x + 22, 95, 11, 9, light, OUTLINE, 0.8)
        for y in (106, 116, 126):
            c.line([(x - 20, y), (x + 20, y)], dark, 1.5)
        c.ellipse(x, 111, 5, 5, light, OUTLINE, 0.6)
    elif outfit == "hoodie":
        c.ellipse(x, 90, 16, 6, dark)
        c.rect(x - 13, 126, x + 13, 140, dark)
        c.line([(x - 5, 90), (x - 5, 108)], (250, 250, 250), 1.2)
        c.line([(x + 5, 90), (x + 5, 108)], (250, 250, 250), 1.2)
    elif outfit == "suit":
        c.poly([(x - 9, 88), (x + 9, 88), (x, 124)], (250, 250, 250))
        c.poly([(x - 2.5, 90), (x + 2.5, 90), (x + 3, 112), (x, 116), (x - 3, 112)],
               _contrast(rgb, (150, 20, 30), (20, 20, 60)))
        c.line([(x - 9, 88), (x - 1, 124)], dark, 1.5)
        c.line([(x + 9, 88), (x + 1, 124)], dark, 1.5)


def _eyes(c: _Canvas, rgb: tuple, hair: tuple, hx: float, ey: float, gap: float) -> None:
    for ex in (hx - gap, hx + gap):
        c.ellipse(ex, ey, 5.5, 6.5, (255, 255, 255), OUTLINE, 0.6)
        c.ellipse(ex, ey + 0.5, 4.2, 5.2, rgb)
        c.ellipse(ex, ey + 1, 1.8, 2.4, _shade(rgb, 0.35))
        c.ellipse(ex - 1.4, ey - 1.6, 1.1, 1.1, (255, 255, 255))
        c.line([(ex - 5, ey - 9), (ex + 5, ey - 9.5)], _shade(hair, 0.7), 1.0)


def _hat(c: _Canvas, hx: float, hy: float) -> None:
    """Drawn before the fringe and high on the head, so hair colour and style stay visible under it."""
    c.ellipse(hx, hy - 31, 15, 11, (110, 70, 40))
    c.ellipse(hx, hy - 22, 31, 5, (90, 55, 30))
    c.rect(hx - 15, hy - 29, hx + 15, hy - 25, (200, 40, 50))


def _accessory(c: _Canvas, acc: str, attributes: dict, hx: float, hy: float, ey: float, gap: float) -> None:
    hair = HAIR_RGB[attributes["hair_color"]]
    if acc == "glasses":
        for ex in (hx - gap, hx + gap):
            c.ellipse(ex, ey, 7.5, 7.5, None, (20, 20, 20), 1.3)
        c.line([(hx - gap + 7.5, ey), (hx + gap - 7.5, ey)], (20, 20, 20), 1.3)
    elif acc == "ribbon":
        rgb = _contrast(hair, (230, 40, 60), (250, 250, 250))
        bx, by = hx + 12, hy - 21
        c.poly([(bx, by), (bx - 9, by - 6), (bx - 9, by + 6)], rgb, OUTLINE)
        c.poly([(bx, by), (bx + 9, by - 6), (bx + 9, by + 6)], rgb, OUTLINE)
        c.ellipse(bx, by, 2.2, 2.2, _shade(rgb, 0.7))
    elif acc == "cat ears":
        for s in (-1, 1):
            c.poly([(hx + s * 6, hy - 20), (hx + s * 20, hy - 12), (hx + s * 17, hy - 34)], hair, OUTLINE)
            c.poly([(hx + s * 9, hy - 20), (hx + s * 17, hy - 15), (hx + s * 16, hy - 28)], (250, 170, 190))
    elif acc == "scarf":
        for i, y in enumerate(range(84, 96, 3)):
            c.rect(hx - 17, y, hx + 17, y + 3, (230, 50, 60) if i % 2 else (250, 240, 220))
        for i, y in enumerate(range(94, 118, 4)):
            c.rect(hx + 6, y, hx + 14, y + 4, (230, 50, 60) if i % 2 else (250, 240, 220))


def draw_character(attributes: dict, size: int, seed: int) -> Image.Image:
    """RGB portrait `size` pixels wide and `size * 3 // 2` tall showing every attribute of the character."""
    rng = random.Random(seed)
    hx, hy = 50 + rng.uniform(-2, 2), 58 + rng.uniform(-1.5, 1.5)
    ey, gap, length = hy + 3 + rng.uniform(-1, 1), 8 + rng.uniform(-0.8, 0.8), rng.uniform(-6, 6)
    hair, skin = HAIR_RGB[attributes["hair_color"]], SKIN_RGB[attributes["skin_tone"]]
    style = attributes["hair_style"]
    c = _Canvas(size, BACKGROUND_RGB[attributes["background"]])
    _hair_back(c, style, hair, hx, hy, length)
    c.rect(hx - 5, hy + 14, hx + 5, 90, _shade(skin, 0.92))
    _outfit(c, attributes["outfit"], OUTFIT_RGB[attributes["outfit_color"]], skin, hx)
    if style == "long":  # strands over the shoulders: what tells long hair from a bob
        for s in (-1, 1):
            c.poly([(hx + s * 16, hy), (hx + s * 22, hy), (hx + s * 24, hy + 56 + length),
                    (hx + s * 15, hy + 52 + length)], hair)
    c.ellipse(hx, hy, 17, 20, skin)
    if attributes["accessory"] == "hat":
        _hat(c, hx, hy)
    _hair_front(c, style, hair, hx, hy)
    _eyes(c, EYE_RGB[attributes["eye_color"]], hair, hx, ey, gap)
    c.line([(hx - 2.5, hy + 13), (hx + 2.5, hy + 13)], _shade(skin, 0.55), 0.9)
    _accessory(c, attributes["accessory"], attributes, hx, hy, ey, gap)
    return c.img.resize((size, size * 3 // 2), Image.Resampling.BOX)
