"""What the routes call: the index, the CLIP `Matcher` and the optional `Judge`, loaded once, as JSON-ready dicts.

`Services` loads `Matcher.from_index` (or the index with another `--model`), the judge when one is
configured, and owns the judge queue. CLIP calls are serialised by a lock: the fast tokenizer is not
safe to call from several threads at once, and one small model answers a search in milliseconds, so
requests queue briefly instead of failing. Results carry `image_url` (served by record id) instead of a
file path: nothing from a request ever names a file. Heatmaps come from `animatch.clip.heatmap`, drawn in a
temporary dir and returned inline as PNG data URLs.
"""

from __future__ import annotations

import base64
import mimetypes
import tempfile
import threading
from pathlib import Path
from typing import Any

from PIL import Image

from animatch.config import ServeConfig
from animatch.data.images import IMAGE_EXTENSIONS
from animatch.data.safepath import UnsafePath, path_inside
from animatch.judge.batching import analyze_in_batches
from animatch.serve.jobs import Job, JudgeQueue


def _public(record: dict, **extra: Any) -> dict:
    return {"id": record.get("id"), "character": record.get("character"), "title": record.get("title"),
            "image_url": f"/api/image/{record.get('id')}", **extra}


class Services:
    def __init__(self, cfg: ServeConfig):
        from animatch.clip.matcher import Matcher

        self.cfg = cfg
        if cfg.model:
            from animatch.models.hub import load_clip

            self.matcher = Matcher(*load_clip(cfg.model, device=cfg.device), index_dir=cfg.index)
        else:
            self.matcher = Matcher.from_index(cfg.index, device=cfg.device)
        self.records: dict[str, dict] = {}
        for record in self.matcher.records:  # two records may share an image (and so an id): the first wins
            self.records.setdefault(record.get("id"), record)
        self.data_root = Path(self.matcher.manifest["data"]).resolve()
        self.clip_lock = threading.Lock()
        self.judge = None
        if cfg.judge_model:
            from animatch.judge.judge import Judge

            self.judge = Judge.from_options(cfg, prefix="judge_")
        self.queue = JudgeQueue(cfg.judge_queue)

    def close(self) -> None:
        self.queue.close()

    def info(self) -> dict:
        m, cfg = self.matcher.manifest, self.cfg
        return {"records": len(self.matcher.records), "images_indexed": m.get("images_indexed"),
                "texts_indexed": m.get("texts_indexed"), "clip_model": cfg.model or m.get("model"),
                "judge": {"available": self.judge is not None, "model": cfg.judge_model, "adapter": cfg.adapter,
                          "threshold": cfg.judge_threshold, "queue": self.queue.load()},
                "limits": {"max_upload_bytes": int(cfg.max_upload_mb * 1024 * 1024), "max_k": cfg.max_k,
                           "max_match_images": cfg.max_match_images, "max_candidates": cfg.max_candidates,
                           "max_image_pixels": cfg.max_image_pixels, "max_decode_pixels": cfg.max_decode_pixels,
                           "max_request_pixels": cfg.max_request_pixels,
                           "max_judge_text_chars": cfg.max_judge_text_chars, "cascade_k": cfg.cascade_k}}

    # ------------------------------------------------------------------------------------- index lookups
    def character(self, record_id: str) -> dict | None:
        record = self.records.get(record_id)
        return None if record is None else _public(record, appearance=record.get("appearance"))

    def character_candidate(self, record_id: str) -> dict | None:
        """A character of the index as a match candidate: its appearance text, labelled "name (title)"."""
        from animatch.data.records import candidate_label

        record = self.records.get(record_id)
        if record is None:
            return None
        label = candidate_label({"candidate": record.get("character"), "title": record.get("title")})
        return {"label": label, "text": record.get("appearance") or "", "id": record_id}

    def characters(self, contains: str, limit: int) -> tuple[int, list[dict]]:
        """Characters whose name or title contains `contains` (case-insensitive), for the Match tab's picker."""
        needle = contains.casefold().strip()
        found = [r for r in self.records.values()
                 if needle in f"{r.get('character') or ''} {r.get('title') or ''}".casefold()]
        return len(found), [_public(r) for r in found[:limit]]

    def image_file(self, record_id: str) -> tuple[Path, str] | None:
        """(path, media type) of a record's image; None when the id is unknown or the file is not servable."""
        record = self.records.get(record_id)
        if record is None or not record.get("file_name"):
            return None
        try:  # a dataset's file_name could climb out of the root, or name a FIFO: serve only files inside it
            path = path_inside(self.data_root, str(record["file_name"]))
        except UnsafePath:
            return None
        if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
            return None
        return path, mimetypes.guess_type(path.name)[0] or "application/octet-stream"

    # ---------------------------------------------------------------------------------------------- CLIP
    def search_text(self, query: str, k: int) -> list[dict]:
        with self.clip_lock:
            hits = self.matcher.search_text(query, k=k)
        return [_public(h, rank=h["rank"], score=h["score"]) for h in hits]

    def search_image(self, image: Image.Image, k: int) -> list[dict]:
        with self.clip_lock:
            hits = self.matcher.search_image(image, k=k)
        return [_public(h, rank=h["rank"], score=h["score"], appearance=h["appearance"]) for h in hits]

    def match(self, images: list[tuple[str, Image.Image]], candidates: list[dict], top_k: int) -> dict:
        """Rank `candidates` ({"label", "text", "id"}) for every image; the table, the matrix and heatmaps."""
        from animatch.clip.heatmap import write_heatmaps

        texts = [c["text"] for c in candidates]
        with self.clip_lock:
            result = self.matcher.match([im for _, im in images], texts, top_k=top_k)
        by_text = {c["text"]: c for c in reversed(candidates)}  # first candidate wins a duplicate text
        rows = [{"image": images[i][0], "matches": [
            {"rank": m["rank"], "label": by_text[m["candidate"]]["label"], "id": by_text[m["candidate"]]["id"],
             "cosine": m["cosine"], "probability": m["probability"]} for m in top]}
            for i, top in zip(result.image_indices, result.top)]
        with tempfile.TemporaryDirectory(prefix="animatch-heatmap-") as tmp:
            pages = write_heatmaps(result.cosine.numpy(), [images[i][0] for i in result.image_indices],
                                   [c["label"] for c in candidates], tmp, title="")
            heatmaps = ["data:image/png;base64," + base64.b64encode(p.read_bytes()).decode() for p in pages]
        return {"images": rows, "candidates": candidates,
                "cosine": [[round(v, 6) for v in row] for row in result.cosine.tolist()], "heatmaps": heatmaps}

    # --------------------------------------------------------------------------------------------- judge
    def submit_judge(self, image: Image.Image, text: str) -> Job:
        def work(job: Job) -> dict:
            result = self.judge.analyze(image, text)
            job.done = 1
            return result

        return self.queue.submit("judge", work)

    def submit_cascade(self, image: Image.Image, k: int) -> tuple[Job, list[dict]]:
        """CLIP's top-k descriptions for the image now; a job in which the judge re-scores each of them."""
        candidates = self.search_image(image, k)

        def work(job: Job) -> list[dict]:
            def progress(first: int, batch: list[dict]) -> None:
                job.done = first + len(batch)

            results = analyze_in_batches(self.judge, [(image, c["appearance"]) for c in candidates],
                                         self.cfg.judge_batch_size, on_batch=progress)
            rescored = [{**_public(c, appearance=c["appearance"]), "clip_rank": c["rank"], "clip_score": c["score"],
                         "judge": r} for c, r in zip(candidates, results)]
            # Judge score first (unscored last), then its expected score, then CLIP's rank.
            rescored.sort(key=lambda c: (c["judge"]["score"] is None, -(c["judge"]["score"] or 0),
                                         -(c["judge"].get("score_expected") or 0), c["clip_rank"]))
            return [{**c, "rank": n} for n, c in enumerate(rescored, 1)]

        return self.queue.submit("cascade", work, total=len(candidates)), candidates
