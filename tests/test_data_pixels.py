"""uint8 pixels finished on the device: the same tensors as the CLIP image processor, reduced decoding of large
sources, and the same embeddings as the processor's path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessorPil

from animatch.clip.embed import embed_images
from animatch.data.images import load_image
from animatch.data.pixels import REDUCING_GAP, PixelPipeline
from animatch.errors import UserError
from animatch.models.hub import load_clip

VIT_B32 = CLIPImageProcessorPil()  # the ViT-B/32 preprocessing: shortest edge 224, centre crop 224


def _finished(processor, image: Image.Image) -> torch.Tensor:
    pipeline = PixelPipeline.from_processor(processor)
    pixels = pipeline(image)
    assert pixels.dtype == torch.uint8
    return pipeline.normaliser()(pixels[None])[0]


def _noise(width: int, height: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


PROCESSORS = [
    VIT_B32,
    CLIPImageProcessorPil(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}),  # clip-tiny's
    CLIPImageProcessorPil(size={"height": 96, "width": 80}, crop_size={"height": 64, "width": 72}),
    CLIPImageProcessorPil(size={"shortest_edge": 48}, crop_size={"height": 64, "width": 64}),  # the crop pads
    CLIPImageProcessorPil(do_center_crop=False),
]
SIZES = [(128, 192), (300, 211), (97, 53), (224, 224), (500, 640), (33, 400), (160, 96)]


def _reduced(processor, width: int, height: int) -> bool:
    """Whether the source is large enough to be shrunk first (test_large_sources_... covers those)."""
    new_w, new_h = PixelPipeline.from_processor(processor).resized_size(width, height)
    return width / new_w >= REDUCING_GAP or height / new_h >= REDUCING_GAP


@pytest.mark.parametrize("processor,width,height", [
    (p, w, h) for p in PROCESSORS for w, h in SIZES if not _reduced(p, w, h)])
def test_pipeline_equals_the_processor(processor, width, height):
    """Noise is the hard case: any resampling difference shows."""
    image = _noise(width, height, seed=width * height)
    expected = processor(images=image, return_tensors="pt")["pixel_values"][0]
    got = _finished(processor, image)
    assert got.shape == expected.shape and got.dtype == torch.float32
    assert (got - expected).abs().max().item() < 1e-5


def test_a_processor_it_cannot_reproduce_is_refused():
    with pytest.raises(UserError, match="unsupported image processor"):
        PixelPipeline.from_processor(CLIPImageProcessorPil(size={"shortest_edge": 224, "longest_edge": 300}))


def test_float_pixels_pass_through_cast():
    normalise = PixelPipeline.from_processor(VIT_B32).normaliser()
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(normalise(x, torch.bfloat16), x.to(torch.bfloat16))


def _scene(width: int, height: int) -> Image.Image:
    """A smooth picture (gradients and soft shapes): what photos and drawings look like to a resampler."""
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    rgb = np.stack([np.sin(6 * x) * 0.5 + 0.5, np.cos(5 * y) * 0.5 + 0.5, (x + y) / 2], axis=-1)
    return Image.fromarray((rgb * 255).astype(np.uint8))


def test_large_sources_are_read_reduced_and_stay_close(tmp_path):
    pipeline = PixelPipeline.from_processor(VIT_B32)
    big = _scene(2400, 1800)
    big.save(tmp_path / "big.jpg", quality=95)
    big.save(tmp_path / "big.png")
    full_jpeg = load_image(tmp_path / "big.jpg")
    drafted = load_image(tmp_path / "big.jpg", draft_size=pipeline.draft_size)
    assert full_jpeg.size == (2400, 1800) and drafted.size == (1200, 900)  # 1/2 scale: still >= 3 x 224
    assert min(drafted.size) >= 224 * REDUCING_GAP
    for path in ("big.jpg", "big.png"):
        expected = VIT_B32(images=load_image(tmp_path / path), return_tensors="pt")["pixel_values"][0]
        got = pipeline.normaliser()(pipeline(load_image(tmp_path / path, draft_size=pipeline.draft_size))[None])[0]
        # one uint8 level is 1/255/0.27 = 0.015 here: on average well under one level, nowhere more than a few
        assert (got - expected).abs().mean().item() < 0.01
        assert (got - expected).abs().max().item() < 0.1


def test_embeddings_equal_the_processor_path(clip_tiny_dir, synth_root):
    """eval/match/index embeddings: uint8 + on-device normalisation vs the processor's float pixels."""
    model, processor = load_clip(str(clip_tiny_dir), device="cpu")
    records = [json.loads(line) for line in (synth_root / "metadata.jsonl").read_text().splitlines()[:8]]
    paths = [synth_root / r["file_name"] for r in records]
    emb, ok, _ = embed_images(model, processor, paths, batch_size=4, progress=False)
    pixels = processor.image_processor(images=[load_image(p) for p in paths], return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        features = model.get_image_features(pixel_values=pixels)
    reference = torch.nn.functional.normalize(getattr(features, "pooler_output", features), dim=-1)
    assert ok == list(range(8)) and (emb - reference).abs().max().item() < 1e-5
