"""What the bench scripts share: running an `animatch` subcommand in-process, timed, stopping on failure, and
the short from-scratch training recipe of the synthetic benches (read from recipes/clip-tiny-scratch.yaml)."""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import torch
import yaml

from animatch.cli import main as animatch


def run(*args: object) -> float:
    """Run `animatch ARGS...`; returns its wall seconds, exits with a message if it fails."""
    start = time.perf_counter()
    code = animatch([str(a) for a in args])
    if code:
        raise SystemExit(f"animatch {args[0]} failed with exit code {code}")
    return time.perf_counter() - start


# The from-scratch recipe for clip-tiny (one source for the README, the demo and these benches); a bench sets
# only its own length: steps, and a warmup that stays the recipe's share of them.
SCRATCH_RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "clip-tiny-scratch.yaml"


def scratch_recipe() -> dict:
    return yaml.safe_load(SCRATCH_RECIPE.read_text())


def scratch_parser(description: str, out: str, steps: int | None = None, *, n: int = 20000
                   ) -> argparse.ArgumentParser:
    """The options every from-scratch synthetic bench takes (a script adds its own); defaults from the recipe."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default=out)
    parser.add_argument("--n", type=int, default=n, help="synthetic characters")
    parser.add_argument("--steps", type=int, default=steps or scratch_recipe()["max_steps"])
    parser.add_argument("--warmup-steps", type=int, help="linear warmup steps (default: the recipe's share of --steps)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    return parser


def scratch_train_args(args: argparse.Namespace) -> tuple:
    """`animatch train` options: the recipe file with the bench's steps and warmup."""
    recipe = scratch_recipe()
    warmup = args.warmup_steps
    if warmup is None:
        warmup = args.steps * recipe["warmup_steps"] // recipe["max_steps"]
    return ("--config", SCRATCH_RECIPE, "--max-steps", args.steps, "--warmup-steps", warmup)


def fresh_run(args: argparse.Namespace) -> Path:
    """Apply --threads and empty --out; returns the out dir."""
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    return out


def vit_b32_shaped(out: Path) -> Path:
    """A random-weight CLIP of openai/clip-vit-base-patch32's shape (151M parameters: text 512 wide, vision 768 wide,
    12 layers each, 32 px patches at 224 px) with the offline tokenizer and the ViT-B/32 preprocessing; built
    once into `out`."""
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    from animatch.models.tiny import _image_processor
    from animatch.models.tokenizers import build_clip_tokenizer

    if (out / "config.json").is_file():
        return out
    tokenizer = build_clip_tokenizer()
    text = {"vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
            "num_attention_heads": 8, "max_position_embeddings": 77, "projection_dim": 512,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id}
    vision = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
              "image_size": 224, "patch_size": 32, "projection_dim": 512}
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=512)).save_pretrained(out)
    CLIPProcessor(image_processor=_image_processor(224), tokenizer=tokenizer).save_pretrained(out)
    return out
