import shutil

import pytest
import torch

from animatch.clip import cache as cache_module
from animatch.clip.cache import EmbeddingCache, model_key
from animatch.clip.embed import embed_chunked, embed_images, embed_texts
from animatch.data.images import list_image_files
from animatch.models.hub import load_clip


@pytest.fixture(scope="module")
def clip(clip_tiny_dir):
    """On the CPU: cached and freshly embedded vectors (other batches) are compared to 1e-5 in float32."""
    return load_clip(str(clip_tiny_dir), device="cpu")


@pytest.fixture()
def folder(synth_root, tmp_path):
    """A private copy of 10 synthetic images (tests add files to it)."""
    out = tmp_path / "images"
    out.mkdir()
    for path in list_image_files(synth_root)[:10]:
        shutil.copy(path, out / path.name)
    return out


def _run(clip, root, paths):
    """Embed as a fresh process would: a new cache object reading `root` from disk."""
    model, processor = clip
    cache = EmbeddingCache(root, model, processor)
    emb, ok, failures = embed_images(model, processor, paths, batch_size=4, cache=cache, progress=False)
    return cache.stats, emb, ok, failures


def test_rerun_embeds_nothing_and_grown_folder_only_new_files(clip, folder, synth_root, tmp_path):
    root = tmp_path / "cache"
    stats, cold, _, _ = _run(clip, root, list_image_files(folder))
    assert (stats.images_embedded, stats.images_cached) == (10, 0)
    stats, warm, _, _ = _run(clip, root, list_image_files(folder))
    assert (stats.images_embedded, stats.images_cached) == (0, 10)
    assert torch.equal(cold, warm)
    for path in list_image_files(synth_root)[10:13]:
        shutil.copy(path, folder / path.name)
    stats, grown, ok, _ = _run(clip, root, list_image_files(folder))
    assert (stats.images_embedded, stats.images_cached) == (3, 10) and len(ok) == 13
    fresh, _, _ = embed_images(*clip, list_image_files(folder), progress=False)
    assert torch.allclose(grown, fresh, atol=1e-5)


def test_failures_are_not_cached_and_a_rewritten_file_is_embedded_again(clip, folder, tmp_path):
    root = tmp_path / "cache"
    bad = folder / "bad.png"
    bad.write_bytes(b"")
    stats, _, ok, failures = _run(clip, root, list_image_files(folder))
    assert stats.images_embedded == 10 and len(ok) == 10 and failures == [(str(bad), "zero-byte file")]
    shutil.copy(list_image_files(folder)[1], bad)  # the file is fixed: new size and mtime
    stats, _, ok, failures = _run(clip, root, list_image_files(folder))
    assert (stats.images_embedded, stats.images_cached) == (1, 10) and failures == []


def test_text_cache_and_files_on_disk(clip, tmp_path):
    model, processor = clip
    root = tmp_path / "cache"
    cache = EmbeddingCache(root, model, processor)
    first = embed_chunked(model, processor, [["red hair", "blue eyes"], ["a hat"]], cache=cache, windows=False)
    assert (cache.stats.texts_embedded, cache.stats.texts_cached) == (3, 0)
    cache = EmbeddingCache(root, model, processor)
    again = embed_chunked(model, processor, [["red hair", "blue eyes"], ["a hat"]], cache=cache, windows=False)
    embed_texts(model, processor, ["a hat", "green eyes"], cache=cache)
    assert (cache.stats.texts_embedded, cache.stats.texts_cached) == (1, 4)
    assert torch.equal(first, again)
    suffixes = {p.suffix for p in root.rglob("*") if p.is_file()}
    assert suffixes == {".json", ".safetensors"}  # never a pickle


def test_interrupted_shard_is_ignored_and_shards_are_compacted(clip, tmp_path, monkeypatch):
    model, processor = clip
    root = tmp_path / "cache"
    cache = EmbeddingCache(root, model, processor)
    for n in range(5):
        cache.put("text", [f"key{n}"], torch.nn.functional.normalize(torch.randn(1, 128), dim=1))
    # A kill between the tensor file and its JSON index leaves a shard with no index: not a cache entry.
    (cache.dir / "text" / "orphan.safetensors").write_bytes(b"partial")
    monkeypatch.setattr(cache_module, "COMPACT_ABOVE", 3)
    reopened = EmbeddingCache(root, model, processor)
    assert len(reopened) == 5
    assert len(list((cache.dir / "text").glob("*.json"))) == 1
    assert len(EmbeddingCache(root, model, processor)) == 5


def test_model_key_follows_the_weights(clip):
    model, processor = clip
    key = model_key(model, processor)
    assert key == model_key(model, processor)
    saved = model.text_projection.weight.detach().clone()
    with torch.no_grad():
        model.text_projection.weight[0, 0] += 1.0
    try:
        assert model_key(model, processor) != key
    finally:
        with torch.no_grad():
            model.text_projection.weight.copy_(saved)
