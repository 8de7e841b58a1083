import json
import shutil

import pytest
import torch

from animatch.clip.embed import embed_chunked, embed_images, embed_pil, embed_texts
from animatch.data.images import load_image
from animatch.models.hub import load_clip


@pytest.fixture(scope="module")
def clip(clip_tiny_dir):
    """On the CPU: batched and one-by-one embeddings agree to 1e-5 in float32 (a GPU embeds under bf16 autocast;
    its path is covered by the `cuda` tests and the jobs built on embed)."""
    return load_clip(str(clip_tiny_dir), device="cpu")


@pytest.fixture(scope="module")
def image_paths(synth_root):
    records = [json.loads(line) for line in (synth_root / "metadata.jsonl").read_text().splitlines()]
    return [synth_root / r["file_name"] for r in records[:12]]


def _unit_float32_cpu(x: torch.Tensor) -> None:
    assert x.dtype == torch.float32 and x.device.type == "cpu"
    assert torch.allclose(x.norm(dim=1), torch.ones(len(x)), atol=1e-5)


def test_images_batched_with_workers_equal_one_by_one(clip, image_paths):
    model, processor = clip
    emb, ok, failures = embed_images(model, processor, image_paths, batch_size=5, workers=2, progress=False)
    assert emb.shape == (12, model.config.projection_dim) and ok == list(range(12)) and failures == []
    _unit_float32_cpu(emb)
    single, _, _ = embed_images(model, processor, image_paths[:3], batch_size=1, progress=False)
    assert torch.allclose(single, emb[:3], atol=1e-5)
    pil = embed_pil(model, processor, [load_image(p) for p in image_paths[:3]])
    assert torch.allclose(pil, emb[:3], atol=1e-5)


def test_unreadable_files_are_reported_not_raised(clip, image_paths, tmp_path):
    model, processor = clip
    good = tmp_path / "good.png"
    shutil.copy(image_paths[0], good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:200])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image at all\n" * 20)
    paths = [truncated, good, tmp_path / "empty.png", tmp_path / "missing.png", tmp_path / "text.jpg"]
    emb, ok, failures = embed_images(model, processor, paths, workers=0, progress=False)
    assert ok == [1] and emb.shape[0] == 1
    reasons = dict(failures)
    assert list(reasons) == [str(paths[i]) for i in (0, 2, 3, 4)]
    assert reasons[str(tmp_path / "empty.png")] == "zero-byte file"
    assert reasons[str(tmp_path / "missing.png")] == "missing file"
    assert all(reasons.values())


def test_texts_truncate_dedupe_and_pool(clip):
    model, processor = clip
    long_text = "She has long silver hair and wears a red kimono. " * 40  # far beyond 77 tokens
    emb = embed_texts(model, processor, ["red hair", long_text, "red hair"], batch_size=2)
    assert emb.shape == (3, model.config.projection_dim)
    _unit_float32_cpu(emb)
    assert torch.equal(emb[0], emb[2])
    alone = embed_texts(model, processor, ["red hair"])
    assert torch.allclose(alone[0], emb[0], atol=1e-5)

    chunks = [["red hair", "blue eyes", "a hat"], ["a kimono"]]
    bare = embed_chunked(model, processor, chunks, windows=False)
    parts = embed_texts(model, processor, ["red hair", "blue eyes", "a hat", "a kimono"])
    expected = torch.nn.functional.normalize(torch.stack([parts[:3].mean(0), parts[3]]), dim=1)
    assert torch.allclose(bare, expected, atol=1e-5)
    pooled = embed_chunked(model, processor, chunks)  # views: each chunk followed by the others, wrapping
    views = embed_texts(model, processor, ["red hair blue eyes a hat", "blue eyes a hat red hair",
                                           "a hat red hair blue eyes", "a kimono"])
    expected = torch.nn.functional.normalize(torch.stack([views[:3].mean(0), views[3]]), dim=1)
    assert torch.allclose(pooled, expected, atol=1e-5)
    _unit_float32_cpu(pooled)
    with pytest.raises(ValueError, match="no text chunks"):
        embed_chunked(model, processor, [["x"], []])


def test_empty_inputs(clip):
    model, processor = clip
    emb, ok, failures = embed_images(model, processor, [], progress=False)
    assert emb.shape == (0, model.config.projection_dim) and ok == [] and failures == []
    assert embed_texts(model, processor, []).shape == (0, model.config.projection_dim)
