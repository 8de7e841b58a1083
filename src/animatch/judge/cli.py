"""`animatch judge`: one pair (`--image --text`, printed or `--json`) or a batch (`--pairs --out`).

Batch mode reads a JSONL of {"image": path, "text": ...} (other fields are kept under "fields"), judges it
in batched generations with a progress bar, and appends one result line per pair to `--out` as each batch
completes. Every result carries `line` (1-based line number in the pairs file) and `key` (line, image and a
hash of the text): on a rerun, pairs whose key already has an `ok` or `unparsed` result are skipped, errors
are retried. Bad lines, bad images and non-English texts get an `error` result line and never stop the
batch. Beside the results go `<stem>.summary.json`, `<stem>.report.md` and `<stem>.config.yaml`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from pathlib import Path

import yaml

from animatch.config import JudgeConfig
from animatch.data.images import ImageLoadError, load_image
from animatch.data.safepath import CONTROL_CHARACTERS, path_problem
from animatch.errors import UserError
from animatch.judge.batching import analyze_in_batches
from animatch.judge.judge import Judge, error_result
from animatch.judge.language import require_english
from animatch.runs import atomic_write_text, claim_output, config_dict, markdown_table, write_run_files

DONE_STATUSES = ("ok", "unparsed")


def run_judge(cfg: JudgeConfig) -> int:
    single = cfg.image is not None or cfg.text is not None
    if single and cfg.pairs is not None:
        raise UserError("give either --image and --text (single mode) or --pairs and --out (batch mode)")
    if cfg.pairs is not None:
        if cfg.out is None:
            raise UserError("--pairs needs --out (the results JSONL)")
        return run_batch(cfg)
    if cfg.image is None or cfg.text is None:
        raise UserError("nothing to judge: give --image and --text, or --pairs and --out")
    return run_single(cfg)


def run_single(cfg: JudgeConfig) -> int:
    require_english(cfg.text)
    try:
        image = load_image(cfg.image, max_pixels=cfg.max_image_pixels)
    except ImageLoadError as e:
        raise UserError(f"--image {cfg.image}: {e.reason}") from None
    result = Judge.from_options(cfg).analyze(image, cfg.text)
    if cfg.json:
        print(json.dumps({"image": cfg.image, "text": cfg.text, **result}, ensure_ascii=False, indent=2))
        return 0
    score = result["score"]
    if score is None:
        score_line = f"unparsed after {result['attempts']} attempts (the analysis below is the raw answer)"
        verdict = "unknown (no score)"
    else:
        expected = result.get("score_expected")
        score_line = f"{score}/10" + (f" (expected {expected:.2f}: the mean under the model's score probabilities)"
                                      if expected is not None else "")
        verdict = (f"{'MATCH' if result['match'] else 'NO MATCH'} "
                   f"(score {score} {'>=' if result['match'] else '<'} threshold {cfg.threshold:g})")
    for label, value in (("Image", cfg.image), ("Text", cfg.text), ("Description", result["description"]),
                         ("Score", score_line), ("Analysis", result["analysis"]), ("Verdict", verdict)):
        print(f"{label + ':':<13}{value}")
    return 0


def _text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def read_pairs(path: Path, image_root: Path) -> tuple[list[dict], list[dict]]:
    """(valid pairs, error rows of bad lines); each has line, key, image, text (and fields when present)."""
    pairs, bad = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            problem, obj = None, None
            try:
                obj = json.loads(line)
            except ValueError:
                problem = "not valid JSON"
            if problem is None and not isinstance(obj, dict):
                problem = "not a JSON object"
            elif problem is None and not (isinstance(obj.get("image"), str) and obj["image"].strip()):
                problem = 'missing "image" (a path)'
            elif problem is None and not isinstance(obj.get("text"), str):
                problem = 'missing "text"'
            elif problem is None:
                problem = _image_problem(obj["image"], image_root)
            if problem is not None:
                row = {"line": line_no, "key": f"{line_no}:bad-line:{_text_hash(line)}", "image": None,
                       "text": None}
                bad.append({**row, **error_result(problem)})
                continue
            row = {"line": line_no, "key": f"{line_no}:{obj['image']}:{_text_hash(obj['text'])}",
                   "image": obj["image"], "text": obj["text"]}
            fields = {k: v for k, v in obj.items() if k not in ("image", "text")}
            if fields:
                row["fields"] = fields
            row["path"] = str(image_root / Path(obj["image"]).expanduser())
            pairs.append(row)
    return pairs, bad


def _image_problem(image: str, image_root: Path) -> str | None:
    """Why a pair's image may not be opened, or None: a relative path must stay inside the image root
    (`safepath.path_inside`); an absolute one is the user's own choice; no name holds control characters."""
    if CONTROL_CHARACTERS.search(image):
        return "unsafe file_name: holds a control character"
    return None if Path(image).expanduser().is_absolute() else path_problem(image_root, image)


def _read_done(out: Path) -> dict[str, dict]:
    """Results of earlier runs that need no redo, by key (a line cut short by a kill is dropped)."""
    done: dict[str, dict] = {}
    if not out.is_file():
        return done
    for line in out.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("status") in DONE_STATUSES and isinstance(row.get("key"), str):
            done[row["key"]] = row
    return done


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def run_batch(cfg: JudgeConfig) -> int:
    pairs_path, out = Path(cfg.pairs), claim_output(cfg, "judge", file=True)
    image_root = Path(cfg.image_root) if cfg.image_root else pairs_path.parent
    pairs, bad = read_pairs(pairs_path, image_root)
    done = _read_done(out)
    keys = {p["key"] for p in pairs}
    kept = [row for key, row in done.items() if key in keys]
    todo = [p for p in pairs if p["key"] not in done]
    atomic_write_text(out, _jsonl(kept + bad))
    elapsed = 0.0
    if todo:
        judge = Judge.from_options(cfg)
        start = time.perf_counter()
        with open(out, "a", encoding="utf-8") as f:
            def write(first: int, results: list[dict]) -> None:  # as they come: a rerun resumes after a kill
                f.write(_jsonl([{k: v for k, v in p.items() if k != "path"} | r
                                for p, r in zip(todo[first:], results)]))
                f.flush()

            analyze_in_batches(judge, [(p["path"], p["text"]) for p in todo], cfg.batch_size, desc="judge",
                               on_batch=write)
        elapsed = time.perf_counter() - start
    rows = sorted(_all_rows(out), key=lambda r: r["line"])
    atomic_write_text(out, _jsonl(rows))
    metrics = summarise(rows, judged=len(todo), resumed=len(kept), elapsed=elapsed)
    metrics.update(model=cfg.model, adapter=cfg.adapter, results=str(out))
    atomic_write_text(out.parent / f"{out.stem}.config.yaml", yaml.safe_dump(config_dict(cfg), sort_keys=False))
    write_run_files(out.parent, metrics=metrics, report=report(metrics, rows),
                    metrics_name=f"{out.stem}.summary.json", report_name=f"{out.stem}.report.md")
    print(f"judged {len(todo)} pairs ({len(kept)} resumed): {metrics['ok']} ok, {metrics['unparsed']} unparsed, "
          f"{metrics['error']} errors, {metrics['matches']} matches -> {out}")
    return 0


def _all_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines() if line.strip()]


def summarise(rows: list[dict], *, judged: int, resumed: int, elapsed: float) -> dict:
    status = Counter(r["status"] for r in rows)
    scores = [r["score"] for r in rows if r["score"] is not None]
    expected = [r["score_expected"] for r in rows if r.get("score_expected") is not None]
    return {
        "pairs": len(rows), "judged": judged, "resumed": resumed, "ok": status["ok"],
        "unparsed": status["unparsed"], "error": status["error"],
        "matches": sum(bool(r["match"]) for r in rows),
        "mean_score": sum(scores) / len(scores) if scores else None,
        "mean_score_expected": sum(expected) / len(expected) if expected else None,
        "score_histogram": {str(s): scores.count(s) for s in range(1, 11)},
        "retried": sum(r["attempts"] > 1 for r in rows),
        "judge_s": elapsed, "pairs_per_s": judged / elapsed if judged and elapsed > 0 else None,
        "errors": [{"line": r["line"], "error": r["error"]} for r in rows if r["status"] == "error"],
    }


def report(metrics: dict, rows: list[dict]) -> str:
    counts = [{k: metrics[k] for k in ("pairs", "judged", "resumed", "ok", "unparsed", "error", "matches",
                                       "retried")}]
    hist = [{"score": s, "pairs": n} for s, n in metrics["score_histogram"].items()]
    lines = [f"# Judge results: {metrics['results']}", "", f"Model: {metrics['model']}"
             + (f" + adapter {metrics['adapter']}" if metrics["adapter"] else ""), "",
             markdown_table(counts), ""]
    if metrics["mean_score"] is not None:
        lines += [f"Mean score: {metrics['mean_score']:.2f}" + (
            f" (expected score: {metrics['mean_score_expected']:.2f})" if metrics["mean_score_expected"] is not None
            else ""), "", markdown_table(hist), ""]
    if metrics["pairs_per_s"]:
        lines += [f"Throughput: {metrics['pairs_per_s']:.3f} pairs/s (model loading excluded)", ""]
    if metrics["errors"]:
        lines += ["## Errors", ""] + [f"- line {e['line']}: {e['error']}" for e in metrics["errors"][:50]]
        if len(metrics["errors"]) > 50:
            lines.append(f"- ... and {len(metrics['errors']) - 50} more (see the results file)")
    return "\n".join(lines)
