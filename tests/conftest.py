"""Shared session fixtures: the real AniPersonaCaps samples, a small synthetic dataset, tiny checkpoints.

Each expensive fixture is built once per test session into a `tmp_path_factory` dir; tests must treat
them as read-only (copy before modifying). Helpers append their fixtures here with small edits.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tiny models are latency-bound: one thread per process avoids thread pools spinning against each other
# on a small shared machine (`make test` sets it too; this covers a bare `pytest`).
os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    """`cuda` tests need a CUDA GPU: skipped, with the reason, where there is none (CI is CPU-only)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run bench/gpu_check.sh on one)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The real AniPersonaCaps samples in <repo>/../shared (never copied into the repo)."""
    path = REPO / ".." / "shared" / "fixtures" / "anipersonacaps"
    if not (path / "metadata.jsonl").is_file():
        pytest.skip(f"shared fixtures not found at {path}")
    return path.resolve()


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A small synthetic dataset root (48 characters, 64 px wide), AniPersonaCaps layout."""
    from animatch.config import SynthConfig
    from animatch.data.synth import run_synth

    out = tmp_path_factory.mktemp("synth") / "root"
    assert run_synth(SynthConfig(out=str(out), n=48, image_size=64, characters_per_title=6, workers=1)) == 0
    return out


@pytest.fixture(scope="session")
def clip_tiny_dir(tmp_path_factory) -> Path:
    """A randomly initialised clip-tiny checkpoint in the Hub layout."""
    from animatch.models.tiny import build_tiny

    return build_tiny("clip-tiny", tmp_path_factory.mktemp("clip_tiny") / "clip-tiny")


@pytest.fixture(scope="session")
def llava_tiny_dir(tmp_path_factory, clip_tiny_dir) -> Path:
    """A randomly initialised llava-tiny checkpoint whose vision tower is copied from clip_tiny_dir."""
    from animatch.models.tiny import build_tiny

    return build_tiny("llava-tiny", tmp_path_factory.mktemp("llava_tiny") / "llava-tiny",
                      vision_tower=str(clip_tiny_dir))


@pytest.fixture(scope="session")
def llava_minilm_dir(tmp_path_factory, clip_tiny_dir) -> Path:
    """A llava-minilm checkpoint (language model from the packaged all-MiniLM-L6-v2) on clip_tiny_dir's tower."""
    from animatch.models.tiny import build_tiny

    return build_tiny("llava-minilm", tmp_path_factory.mktemp("llava_minilm") / "llava-minilm",
                      vision_tower=str(clip_tiny_dir))


@pytest.fixture(scope="session")
def prepared_dir(tmp_path_factory, synth_root) -> Path:
    """`animatch prepare` output (optimized_metadata.jsonl, train/val/test.jsonl) of synth_root."""
    from animatch.config import PrepareConfig
    from animatch.data.prepare import run_prepare

    out = tmp_path_factory.mktemp("prepared") / "prepared"
    assert run_prepare(PrepareConfig(data=str(synth_root), out=str(out), workers=1)) == 0
    return out


@pytest.fixture(scope="session")
def clip_matched_dir(tmp_path_factory, synth_root, clip_tiny_dir) -> Path:
    """clip-tiny whose two projections are fitted (contrastive, on frozen tower features) to synth_root: every
    image ranks its own pooled appearance (the mean over its chunk windows, as `embed_chunked` pools) and its
    attribute query first. Deterministic; ~10 s."""
    import json

    import torch
    import torch.nn.functional as F

    from animatch.data.images import load_image
    from animatch.data.records import record_chunks
    from animatch.data.synth import query_text
    from animatch.data.text import chunk_windows
    from animatch.models.hub import load_clip

    torch.manual_seed(0)
    records = [json.loads(line) for line in (synth_root / "metadata.jsonl").read_text().splitlines()]
    # Fitted on the CPU (float32, no TF32): the same fixture on every machine, with or without a GPU.
    model, processor = load_clip(str(clip_tiny_dir), device="cpu")
    # Fitted to both poolings (windows: what embed_chunked does; bare chunks: audit's per-sentence scores).
    views = [record_chunks(r) for r in records] + [chunk_windows(record_chunks(r)) for r in records]
    texts = [v for vs in views for v in vs] + [query_text(r["attributes"]) for r in records]
    with torch.no_grad():
        images = [load_image(synth_root / r["file_name"]) for r in records]
        image_h = model.vision_model(pixel_values=processor.image_processor(
            images=images, return_tensors="pt")["pixel_values"]).pooler_output
        text_h = model.text_model(**processor.tokenizer(texts, padding=True, truncation=True, max_length=77,
                                                        return_tensors="pt")).pooler_output
    owner = torch.tensor([n for n, vs in enumerate(views) for _ in vs])  # view set n (n >= N: windows)
    labels = torch.arange(len(records))
    optimizer = torch.optim.Adam([model.visual_projection.weight, model.text_projection.weight], lr=1e-2)
    for _ in range(200):
        image_e = F.normalize(image_h @ model.visual_projection.weight.T, dim=-1)
        text_e = F.normalize(text_h @ model.text_projection.weight.T, dim=-1)
        pooled = F.normalize(torch.zeros(len(views), image_e.shape[1]).index_add(0, owner, text_e[:len(owner)]),
                             dim=-1)
        loss = sum(F.cross_entropy(20 * image_e @ t.T, labels) + F.cross_entropy(20 * t @ image_e.T, labels)
                   for t in (pooled[:len(records)], pooled[len(records):], text_e[len(owner):]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        model.logit_scale.fill_(float(torch.log(torch.tensor(20.0))))
    out = tmp_path_factory.mktemp("clip_matched") / "clip-matched"
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def synth_index_dir(tmp_path_factory, synth_root, clip_matched_dir) -> Path:
    """`animatch index` of synth_root with clip_matched_dir (exact search, no embedding cache)."""
    from animatch.cli import main

    out = tmp_path_factory.mktemp("synth_index") / "index"
    assert main(["index", "--data", str(synth_root), "--model", str(clip_matched_dir), "--out", str(out),
                 "--workers", "0", "--no-cache"]) == 0
    return out


@pytest.fixture(scope="session")
def live_server(synth_index_dir, llava_tiny_dir):
    """A real `animatch serve` (uvicorn in a thread) on a free loopback port: the synth index, llava-tiny as the
    judge (few tokens), a 1 MiB upload cap and a judge queue of 2. Yields (base URL, its Services)."""
    import threading
    import time

    from animatch.config import ServeConfig
    from animatch.serve.app import open_server

    cfg = ServeConfig(index=str(synth_index_dir), judge_model=str(llava_tiny_dir), port=0, max_upload_mb=1.0,
                      judge_queue=2, cascade_k=3, judge_batch_size=2, judge_max_description_tokens=8,
                      judge_max_analysis_tokens=8)
    server, sock = open_server(cfg, log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", server.config.app.state.services
    server.should_exit = True
    thread.join(timeout=15)
