"""`animatch serve` as a real uvicorn server on a loopback port (synth index, fitted clip-tiny, llava-tiny judge):
every API operation, the refusals (size, non-image, bomb, path traversal, full judge queue, no judge) and a
burst of 100 concurrent searches, whose p50/p99 latency is printed (run with -s to see it)."""

from __future__ import annotations

import base64
import http.client
import io
import json
import statistics
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from animatch.cli import main
from animatch.data.synth import query_text

GOOD_TEXT = "A girl with long pink hair, blue eyes and a black school uniform."
JOB_DEADLINE_S = 60


@pytest.fixture(scope="module")
def records(synth_root):
    return [json.loads(line) for line in (synth_root / "metadata.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def client(live_server):
    with httpx.Client(base_url=live_server[0], timeout=60) as c:
        yield c


@pytest.fixture
def services(live_server):
    return live_server[1]


def image_file(synth_root, record) -> tuple[str, bytes, str]:
    return record["file_name"].rsplit("/", 1)[-1], (synth_root / record["file_name"]).read_bytes(), "image/png"


def wait_job(client, job: dict) -> dict:
    deadline = time.monotonic() + JOB_DEADLINE_S
    while job["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, f"judge job stuck: {job}"
        time.sleep(0.05)
        job = client.get(f"/api/judge/{job['job_id']}").json()
    return job


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid 1x1 PNG whose header claims `width` x `height` pixels (100000 x 100000: a bomb)."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def raw_get(base_url: str, path: str) -> tuple[int, bytes]:
    """GET with the path sent byte for byte (httpx would normalise the dots away)."""
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_page_docs_and_info(client):
    page = client.get("/")
    assert page.status_code == 200 and "<title>animatch</title>" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    docs = client.get("/docs")  # served offline: no CDN in the page, the bundle comes from this server
    assert docs.status_code == 200 and "cdn." not in docs.text
    bundle = next(part.split('"')[1] for part in docs.text.split("src=")[1:] if "swagger-ui-bundle" in part)
    assert client.get(bundle).status_code == 200
    paths = set(client.get("/openapi.json").json()["paths"])
    assert {"/api/info", "/api/search", "/api/search/image", "/api/characters", "/api/character/{record_id}",
            "/api/image/{record_id}", "/api/match", "/api/judge", "/api/judge/cascade",
            "/api/judge/{job_id}"} <= paths
    info = client.get("/api/info").json()
    assert info["records"] == info["images_indexed"] == 48 and info["judge"]["available"] is True
    assert info["limits"]["max_upload_bytes"] == 1024 * 1024 and info["limits"]["cascade_k"] == 3


def test_search_by_text_serves_results_and_images_by_id(client, records, synth_root):
    record = records[3]
    body = client.get("/api/search", params={"q": query_text(record["attributes"]), "k": 4}).json()
    results = body["results"]
    assert [r["rank"] for r in results] == [1, 2, 3, 4]
    assert results[0]["character"] == record["character"] and results[0]["title"] == record["title"]
    assert all(set(r) == {"id", "character", "title", "image_url", "rank", "score"} for r in results)
    image = client.get(results[0]["image_url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content == (synth_root / record["file_name"]).read_bytes()
    detail = client.get(f"/api/character/{results[0]['id']}").json()
    assert detail["character"] == record["character"] and detail["appearance"].split()[:3] == \
        record["appearance"].split()[:3]
    for params, status in (({"q": "red hair", "k": 0}, 400), ({"q": "red hair", "k": 51}, 400),
                           ({"q": "   "}, 400), ({"q": ""}, 422), ({}, 422), ({"q": "x", "k": "many"}, 422)):
        refused = client.get("/api/search", params=params)
        assert refused.status_code == status and isinstance(refused.json()["detail"], str)


def test_search_by_image_and_character_list(client, records, synth_root):
    record = records[7]
    response = client.post("/api/search/image", files={"image": image_file(synth_root, record)}, data={"k": "3"})
    results = response.json()["results"]
    assert len(results) == 3 and results[0]["character"] == record["character"] and results[0]["appearance"]
    listed = client.get("/api/characters", params={"q": record["title"].upper(), "limit": 500}).json()
    assert listed["total"] >= 1 and all(r["title"] == record["title"] for r in listed["results"])
    assert record["character"] in {r["character"] for r in listed["results"]}
    assert client.get("/api/characters", params={"limit": 3}).json()["total"] == 48
    assert client.get("/api/characters", params={"limit": 0}).status_code == 400
    assert client.get("/api/character/0123456789abcdef").status_code == 404


def test_match_ranks_texts_and_index_characters_with_a_heatmap(client, records, synth_root):
    picked = client.get("/api/search", params={"q": query_text(records[2]["attributes"]), "k": 1}).json()
    texts = [query_text(records[0]["attributes"]), query_text(records[1]["attributes"])]
    response = client.post("/api/match", data={"texts": "\n".join(texts) + "\n\n", "character_ids": [
        picked["results"][0]["id"]], "top_k": "2"}, files=[("images", image_file(synth_root, r)) for r in records[:3]])
    assert response.status_code == 200, response.text
    body = response.json()
    assert [c["label"] for c in body["candidates"]][:2] == texts and body["candidates"][2]["id"]
    assert len(body["cosine"]) == 3 and all(len(row) == 3 for row in body["cosine"])
    assert [row["matches"][0]["label"] for row in body["images"]] == [c["label"] for c in body["candidates"]]
    assert all(len(row["matches"]) == 2 for row in body["images"])
    assert len(body["heatmaps"]) == 1 and body["heatmaps"][0].startswith("data:image/png;base64,")
    heatmap = Image.open(io.BytesIO(base64.b64decode(body["heatmaps"][0].split(",", 1)[1])))
    assert heatmap.width > 300 and heatmap.height > 300
    one = [("images", image_file(synth_root, records[0]))]
    for data, message in (({"texts": " \n"}, "candidates"), ({"texts": "x", "character_ids": ["nope"]}, "no character"),
                          ({"texts": "a\nb", "top_k": "0"}, "top_k")):
        refused = client.post("/api/match", data=data, files=one)
        assert refused.status_code == 400 and message in refused.json()["detail"]
    assert client.post("/api/match", data={"texts": "x"}).status_code == 422  # no image


def test_judge_job_and_cascade(client, synth_root, records):
    image = image_file(synth_root, records[0])
    job = client.post("/api/judge", data={"text": GOOD_TEXT}, files={"image": image})
    assert job.status_code == 202 and job.json()["status_url"] == f"/api/judge/{job.json()['job_id']}"
    done = wait_job(client, job.json())
    assert done["status"] == "done" and done["progress"] == {"done": 1, "total": 1} and done["elapsed_s"] > 0
    result = done["result"]
    assert {"description", "score", "analysis", "match", "status", "raw"} <= set(result)
    assert result["status"] in ("ok", "unparsed") and isinstance(result["description"], str)
    foreign = client.post("/api/judge", data={"text": "長いピンクの髪と青い目の女の子"}, files={"image": image})
    assert foreign.status_code == 400 and "English" in foreign.json()["detail"]
    cascade = client.post("/api/judge/cascade", data={"k": "3"}, files={"image": image})
    assert cascade.status_code == 202 and len(cascade.json()["clip_candidates"]) == 3
    done = wait_job(client, cascade.json())
    assert done["status"] == "done" and done["progress"] == {"done": 3, "total": 3}
    rows = done["result"]
    assert [r["rank"] for r in rows] == [1, 2, 3] and sorted(r["clip_rank"] for r in rows) == [1, 2, 3]
    assert rows[0]["character"] and all("score" in r["judge"] for r in rows)
    assert client.post("/api/judge/cascade", data={"k": "4"}, files={"image": image}).status_code == 400
    assert client.get("/api/judge/ffffffffffffffff").status_code == 404


def test_judge_queue_is_bounded(client, services, synth_root, records):
    release = threading.Event()
    blocker = services.queue.submit("test", lambda job: release.wait(JOB_DEADLINE_S))
    try:
        deadline = time.monotonic() + JOB_DEADLINE_S
        while services.queue.snapshot(blocker.id)["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        image = image_file(synth_root, records[0])
        waiting = [client.post("/api/judge", data={"text": GOOD_TEXT}, files={"image": image}) for _ in range(2)]
        assert [w.status_code for w in waiting] == [202, 202]
        assert [w.json()["position"] for w in waiting] == [1, 2] and waiting[1].json()["status"] == "queued"
        full = client.post("/api/judge", data={"text": GOOD_TEXT}, files={"image": image})
        assert full.status_code == 429 and "queue is full" in full.json()["detail"]
        assert full.headers["retry-after"] == "5"
        assert client.get("/api/info").json()["judge"]["queue"] == {"running": 1, "waiting": 2, "max_waiting": 2}
    finally:
        release.set()
    assert all(wait_job(client, w.json())["status"] == "done" for w in waiting)


def test_no_judge_configured_is_explained(client, services, monkeypatch, synth_root, records):
    monkeypatch.setattr(services, "judge", None)
    assert client.get("/api/info").json()["judge"]["available"] is False
    for path, data in (("/api/judge", {"text": GOOD_TEXT}), ("/api/judge/cascade", {})):
        refused = client.post(path, data=data, files={"image": image_file(synth_root, records[0])})
        assert refused.status_code == 503 and "--judge-model" in refused.json()["detail"]


def test_uploads_too_large_not_images_and_bombs_are_refused(client, synth_root):
    big = client.post("/api/search/image", files={"image": ("big.png", b"\0" * (1024 * 1024 + 1), "image/png")})
    assert big.status_code == 413 and "upload too large" in big.json()["detail"]

    def chunks():  # no Content-Length: refused while streaming
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n\r\n'
        for _ in range(40):
            yield b"x" * 65536

    streamed = client.post("/api/search/image", content=chunks(),
                           headers={"content-type": "multipart/form-data; boundary=b"})
    assert streamed.status_code == 413 and "--max-upload-mb" in streamed.json()["detail"]
    truncated = (synth_root / json.loads((synth_root / "metadata.jsonl").read_text().splitlines()[0])["file_name"]
                 ).read_bytes()[:200]
    for name, data, status, reason in (("notes.png", b"just some text", 415, "not an image"),
                                       ("page.jpg", b"<!doctype html><html></html>", 415, "not an image: text/HTML"),
                                       ("empty.png", b"", 400, "zero-byte file"),
                                       ("bomb.png", png_bomb(), 400, "decompression bomb"),
                                       ("cut.png", truncated, 400, "")):
        for path, extra in (("/api/search/image", {}), ("/api/judge", {"text": GOOD_TEXT})):
            refused = client.post(path, files={"image": (name, data, "image/png")}, data=extra)
            assert refused.status_code == status and refused.json()["detail"].startswith(f"{name}: {reason}")
        refused = client.post("/api/match", data={"texts": "red hair"}, files=[("images", (name, data, "image/png"))])
        assert refused.status_code == status


def test_decoded_pixels_are_capped_per_image_and_per_request(client, services, monkeypatch, synth_root, records):
    # 9000 x 9000 is under the bomb cap but above --max-decode-pixels; a PNG cannot be decoded downscaled.
    huge = client.post("/api/search/image", files={"image": ("huge.png", png_bomb(9000, 9000), "image/png")})
    assert huge.status_code == 400 and huge.json()["detail"].startswith("huge.png: too many pixels: 9000x9000")
    jpeg = io.BytesIO()
    Image.new("RGB", (800, 600), "red").save(jpeg, format="JPEG")
    monkeypatch.setattr(services.cfg, "max_decode_pixels", 40_000)  # 800 x 600 is decoded at 1/4: 200 x 150
    assert client.post("/api/search/image", files={"image": ("a.jpg", jpeg.getvalue(), "image/jpeg")}).status_code \
        == 200
    one = Image.open(synth_root / records[0]["file_name"])
    monkeypatch.setattr(services.cfg, "max_request_pixels", one.width * one.height * 3 // 2)
    files = [("images", image_file(synth_root, r)) for r in records[:2]]
    refused = client.post("/api/match", data={"texts": "red hair"}, files=files)
    assert refused.status_code == 400 and "--max-request-pixels" in refused.json()["detail"]
    assert client.post("/api/match", data={"texts": "red hair"}, files=files[:1]).status_code == 200


def test_a_long_judge_text_is_refused_before_it_is_queued(client, synth_root, records):
    refused = client.post("/api/judge", files={"image": image_file(synth_root, records[0])},
                          data={"text": "Red hair. " * 500})
    assert refused.status_code == 400 and refused.json()["detail"] == (
        "the text has 5000 characters; the limit is 4000 (server option --max-judge-text-chars)")


def test_no_request_path_reaches_the_file_system(live_server, client, services, monkeypatch, records):
    url = live_server[0]
    for path in ("/api/image/../../etc/passwd", "/api/image/..%2F..%2F..%2Fetc%2Fpasswd",
                 "/api/image/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/api/image/..", "/api/image/a/b",
                 "/api/image/%2Fetc%2Fpasswd", "/api/image/" + records[0]["file_name"],
                 "/api/character/..%2F..%2Fetc%2Fpasswd", "/static/../../../../etc/passwd",
                 "/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd", "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                 "/static/../app.py", "/static/..%2Fapp.py", "/static-offline-docs/..%2F..%2Fcore.py"):
        status, body = raw_get(url, path)
        assert status in (400, 404), (path, status)
        assert b"root:" not in body and b"import" not in body, path
    # A record whose file_name climbs out of the data root is not served either.
    monkeypatch.setitem(services.records, "escape", {"id": "escape", "file_name": "../../../../etc/passwd"})
    monkeypatch.setitem(services.records, "notimage", {"id": "notimage", "file_name": "metadata.jsonl"})
    assert client.get("/api/image/escape").status_code == 404
    assert client.get("/api/image/notimage").status_code == 404


def test_100_concurrent_searches(live_server, records):
    local = threading.local()
    queries = [query_text(r["attributes"]) for r in records]

    def search(n: int) -> tuple[float, int, int]:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=live_server[0], timeout=30)
        start = time.perf_counter()
        response = local.client.get("/api/search", params={"q": queries[n % len(queries)], "k": 5})
        return time.perf_counter() - start, response.status_code, len(response.json().get("results", []))

    with ThreadPoolExecutor(max_workers=10) as pool:
        outcomes = list(pool.map(search, range(100)))
    assert [(status, n) for _, status, n in outcomes] == [(200, 5)] * 100
    latencies = sorted(1000 * s for s, _, _ in outcomes)
    p50, p99 = statistics.median(latencies), latencies[98]
    print(f"\n100 searches, 10 concurrent clients: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {latencies[-1]:.1f} ms")


def test_cli_refuses_bad_setups_before_loading_models(synth_index_dir, tmp_path, capsys):
    assert main(["serve", "--index", str(tmp_path / "missing")]) == 2
    assert "--index: dir not found" in capsys.readouterr().err
    assert main(["serve", "--index", str(synth_index_dir), "--adapter", str(tmp_path)]) == 2
    assert "--adapter needs --judge-model" in capsys.readouterr().err
    assert main(["serve", "--index", str(synth_index_dir), "--max-upload-mb", "0"]) == 2
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["serve", "--index", str(synth_index_dir), "--port", str(busy.getsockname()[1])]) == 2
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err
