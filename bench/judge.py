"""Two-stage judge throughput: pairs/s with and without stage-2 prefix (KV-cache) reuse, and with static caches
(--static-cache: compiled decode steps on a GPU), at batch 1, 8 and 32.

Usage: .venv/bin/python bench/judge.py [--model DIR] [--pairs 32] [--batch-sizes 1 8 32]
           [--description-tokens 48] [--analysis-tokens 24] [--device cuda] [--dtype bfloat16] [--threads 1]
           [--real-shape [--layers N]] [--stop-at-eos]
Without --model, builds llava-tiny (random weights). --real-shape instead builds, from its config and with
no download, a random-weight model of llava-1.5-7b's shape (CLIP ViT-L/14-336 tower, 576 image tokens,
Llama-7B) in --dtype on --device (a GPU with ~16 GB; --layers N shrinks both towers for a dry run). Every
path decodes greedily with the same budgets and no retries, and (unless --stop-at-eos) never stops at an
end-of-sequence token, so each does the same number of steps whatever its rounding (descriptions end at a
token a probe writes, as a real model's end before the budget, see end_descriptions_early): they differ only in
re-encoding the image, prompt and description (reuse), or in the cache (static). Whether their outputs are
identical is printed (in float32 they are; in bf16/fp16 a shorter attention rounds differently); goal:
reuse >= 1.2x pairs/s at every batch size. Prints pairs/s of the whole judge and of stage 2 alone, and the
static caches' first batch (on a GPU: the compile).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from animatch.judge.judge import Judge
from animatch.judge.loading import load_judge_model
from animatch.models.tiny import build_tiny
from animatch.runs import markdown_table

TEXTS = ["A girl with long pink hair, blue eyes and a black school uniform with a red ribbon.",
         "A tall man in a long black coat with short silver hair and red eyes, holding a sword.",
         "Short blue hair, a white maid outfit and a headdress.",
         "Twin tails, a green jacket and a cheerful smile."]


def real_shape_model(processor, device: str, dtype: torch.dtype, layers: int | None):
    """A random-weight LlavaForConditionalGeneration of llava-1.5-7b's shape, built from its config."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    image_token = processor.tokenizer.convert_tokens_to_ids("<image>")
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=layers or 24,
                                       num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768),
        text_config=LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=layers or 32,
                                num_attention_heads=32, num_key_value_heads=32, vocab_size=32064,
                                max_position_embeddings=4096, rms_norm_eps=1e-5),
        image_token_index=image_token, image_seq_length=576, vision_feature_layer=-2,
        vision_feature_select_strategy="default", projector_hidden_act="gelu")
    config._attn_implementation = "sdpa"
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(config, dtype=dtype)
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    processor.image_processor.size = {"shortest_edge": 336}
    processor.image_processor.crop_size = {"height": 336, "width": 336}
    processor.patch_size = 14
    return model.eval()


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run(judge: Judge, pairs: list, batch_size: int) -> tuple[float, float, list[str], float]:
    """(pairs/s, stage-2 pairs/s, stage-2 answers, seconds of the warm-up batch) over `pairs`, after one
    warm-up batch."""
    start = time.perf_counter()
    judge.analyze_batch(pairs[:batch_size])
    synchronize()
    warm_up = time.perf_counter() - start
    start, stage2, answers = time.perf_counter(), 0.0, []
    for first in range(0, len(pairs), batch_size):
        results = judge.analyze_batch(pairs[first:first + batch_size])
        stage2 += sum(r["timings"]["stage2_s"] for r in results)
        answers += [r["raw"] for r in results]
    synchronize()
    elapsed = time.perf_counter() - start
    return len(pairs) / elapsed, len(pairs) / stage2, answers, warm_up


def end_descriptions_early(judge: Judge, image: Image.Image) -> None:
    """Random weights never write an end-of-sequence token, but a real model ends its description with one before
    the budget, and the columns after it stay masked in the reused cache (at batch 1 too). So the token a probe
    description writes a third of the way in counts as an end of description as well; generation still decodes
    its whole budget (the same work on every path)."""
    judge.model.generation_config.eos_token_id = None
    described = judge._describe([image])
    step = described.inputs["input_ids"].shape[1] + judge.max_description_tokens // 3
    judge._eos.add(int(described.sequences[0, step]))


def compare(judge: Judge, pairs: list, batch_size: int, static: bool = True) -> dict:
    """One table row: `run` with and without prefix reuse, and (`static`) with static caches and reuse."""
    paths = ((True, False), (False, False)) + (((True, True),) if static else ())
    figures = {}
    for reuse, static_cache in paths:
        judge.reuse_prefix, judge.static_cache = reuse, static_cache
        figures[reuse, static_cache] = run(judge, pairs, batch_size)
    judge.static_cache = False
    reused, scratch = figures[True, False], figures[False, False]
    row = {"batch": batch_size, "reuse pairs/s": reused[0], "no-reuse pairs/s": scratch[0],
           "speed-up": reused[0] / scratch[0], "stage-2 speed-up": reused[1] / scratch[1],
           "same as no-reuse": reused[2] == scratch[2]}
    if static:
        compiled = figures[True, True]
        row.update({"static pairs/s": compiled[0], "static first batch s": compiled[3],
                    "static same": compiled[2] == reused[2]})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="LLaVA checkpoint dir or hub id (default: build llava-tiny)")
    parser.add_argument("--real-shape", action="store_true", help="random-weight llava-1.5-7b shape")
    parser.add_argument("--layers", type=int, help="--real-shape: layers per tower (default: the real ones)")
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--description-tokens", type=int, default=48)
    parser.add_argument("--analysis-tokens", type=int, default=24)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None, choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (a tiny model on a shared CPU runs fastest on one; 0: torch's default)")
    parser.add_argument("--stop-at-eos", action="store_true",
                        help="stop at end-of-sequence tokens (then the paths may decode different lengths)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        source = args.model
        if source is None:
            clip = build_tiny("clip-tiny", Path(tmp) / "clip-tiny")
            source = str(build_tiny("llava-tiny", Path(tmp) / "llava-tiny", vision_tower=str(clip)))
        settings = {"temperature": 0.0, "retry_temperatures": (), "max_analysis_tokens": args.analysis_tokens,
                    "max_description_tokens": args.description_tokens}
        if args.real_shape:
            _, processor = load_judge_model(source, device="cpu")
            device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
            dtype = getattr(torch, args.dtype or ("bfloat16" if device.startswith("cuda") else "float32"))
            judge = Judge.from_model(real_shape_model(processor, device, dtype, args.layers), processor, **settings)
            label = f"random llava-1.5-7b shape ({args.layers or 'all'} layers), {dtype}, {device}"
        else:
            judge = Judge(source, device=args.device, dtype=args.dtype, **settings)
            label = f"{source}, {judge.model.dtype}, {judge.device}"

        rng = np.random.default_rng(0)
        images = [Image.fromarray(rng.integers(0, 255, (96, 64, 3), dtype=np.uint8)) for _ in range(4)]
        pairs = [(images[i % 4], TEXTS[(i // 4 + i) % 4]) for i in range(args.pairs)]
        if not args.stop_at_eos:
            end_descriptions_early(judge, images[0])
        rows = [compare(judge, pairs, batch_size) for batch_size in args.batch_sizes]
    print(f"Judge throughput: {label}; {args.pairs} pairs, {args.description_tokens} description + "
          f"{args.analysis_tokens} analysis tokens{' max' if args.stop_at_eos else ''}, greedy\n")
    print(markdown_table(rows, floatfmt=".2f"))


if __name__ == "__main__":
    main()
