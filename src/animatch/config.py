"""Every setting of every job, with its default and help text: the single source of truth.

Each `animatch` subcommand has one dataclass here. The CLI builds its options from the fields (name,
type, default, `help`, `choices`, whether a path must exist), so `animatch <cmd> --help` always matches
the code, and a YAML config file (`--config`) may set any field, with command-line options on top. Library
functions take these dataclasses, so the Python API and the CLI share defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

DEFAULT_CLIP = "openai/clip-vit-base-patch32"
DEFAULT_LLAVA = "llava-hf/llava-1.5-7b-hf"
TINY_PRESETS = ("clip-tiny", "clip-small", "llava-tiny")


def opt(default: Any = None, help: str = "", *, required: bool = False, choices: tuple | None = None,
        exists: str | None = None, positional: bool = False, nargs: str | None = None) -> Any:
    """A config field. `exists` is "dir", "file" or "path": the CLI checks it before running."""
    meta = {"help": help, "required": required, "choices": choices, "exists": exists,
            "positional": positional, "nargs": nargs}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


# ---------------------------------------------------------------------------------------------- data
@dataclass
class SynthConfig:
    """Draw a synthetic persona dataset in the AniPersonaCaps layout."""
    out: str = opt(help="output dataset root (metadata.jsonl + images/)", required=True)
    n: int = opt(3000, "number of characters")
    seed: int = opt(0, "random seed; the same seed gives byte-identical output")
    image_size: int = opt(128, "image width in pixels (height is 1.5x, portrait like the real data)")
    characters_per_title: int = opt(12, "mean number of characters per title (anime)")
    workers: int = opt(0, "drawing processes (0: one per CPU core)")


@dataclass
class PrepareConfig:
    """Clean, validate, deduplicate, chunk and split a dataset root (the reference optimized_metadata.py)."""
    data: str = opt(help="dataset root holding metadata.jsonl and the images", required=True, exists="dir")
    out: str = opt(help="output dir for optimized_metadata.jsonl, train/val/test.jsonl, prepare_report.json",
                   required=True)
    metadata: str = opt("metadata.jsonl", "metadata file name, relative to --data")
    val_fraction: float = opt(0.05, "fraction of titles in the validation split")
    test_fraction: float = opt(0.05, "fraction of titles in the test split")
    split_seed: int = opt(0, "salt of the title hash that assigns splits")
    min_appearance_chars: int = opt(20, "appearance texts shorter than this (after cleaning) are dropped")
    chunk_tokens: int = opt(77, "max CLIP tokens per appearance chunk, start and end tokens included")
    tokenizer: Optional[str] = opt(None, "CLIP tokenizer (hub id or dir) for exact chunk lengths; "
                                         "default: a conservative offline estimate")
    placeholder_min_characters: int = opt(3, "an image shared by at least this many characters of different "
                                             "titles is a placeholder and dropped")
    max_image_pixels: int = opt(89_478_485, "images above this many pixels are rejected (decompression bombs)")
    check_images: bool = opt(True, "decode every image once to validate it")
    workers: int = opt(0, "image-checking processes (0: one per CPU core)")


@dataclass
class DownloadConfig:
    """Fetch AniPersonaCaps from the Hugging Face Hub (metadata + only the images needed)."""
    out: str = opt(help="output dataset root", required=True)
    repo: str = opt("mrzjy/AniPersonaCaps", "dataset repository on the Hub")
    limit: Optional[int] = opt(None, "keep only the first N records (and download only their images)")
    revision: Optional[str] = opt(None, "git revision of the dataset repository")


# -------------------------------------------------------------------------------------------- models
@dataclass
class InitModelConfig:
    """Build a tiny randomly initialised checkpoint in exactly the Hub layout, offline."""
    preset: str = opt(help="which checkpoint", required=True, choices=TINY_PRESETS, positional=True)
    out: str = opt(help="output directory", required=True)
    vision_tower: Optional[str] = opt(None, "llava-tiny only: take the vision tower from this CLIP "
                                            "checkpoint (dir or hub id)")
    seed: int = opt(0, "seed of the random initialisation")
