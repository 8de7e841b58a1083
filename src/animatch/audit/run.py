"""`animatch audit`: score every image-text pair with CLIP, flag the mismatched ones, verify them with the judge.

Images are embedded as `match` embeds them (cached; under `accelerate launch` sharded across processes and
gathered); texts, scores, the judge and all outputs are the main process's. Per pair: cosine, ranks, z-scores,
fit, title_z, chunk cosines and per-sentence cosine and deficit; the flag and sentence rules and how their
thresholds are calibrated are in `animatch.audit.scoring`. Actions for clean_metadata.jsonl: "drop" for an
unreadable image or a flagged pair, else "keep". With --trim-sentences a pair whose text holds non-fitting
sentences is "trim"med (those sentences removed) instead, or dropped when none of its sentences fits; a
flagged pair is trimmed only when its trimmed text keeps more than half of its sentences and passes the pair
rule. Outputs: audit.jsonl, flagged.html, clean_metadata.jsonl, summary.json, report.md, config.yaml;
clean_metadata.jsonl only when the calibration finds the flags it acts on reliable (or with --force-clean).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from animatch.audit import scoring
from animatch.audit.cascade import run_cascade, select_for_judge
from animatch.audit.records import clean_record, load_records, sentences_of, trimmed_text
from animatch.audit.report import report_markdown, write_flagged_html
from animatch.config import AuditConfig
from animatch.errors import UserError
from animatch.runs import atomic_write_text, claim_output, write_run_files

DECIMALS = 5
TRIM_BLOCK = 1024
WEAK_J = 0.5  # below this TPR - FPR at a calibrated threshold, the summary warns that flags are unreliable


def _rounded(x: float) -> float | None:
    """`x` rounded for the JSON outputs; None when missing or not finite (JSON has no NaN)."""
    return None if x is None or not np.isfinite(x) else round(float(x), DECIMALS)


def _calibrate(cfg: AuditConfig, stats: scoring.PairStats, image_emb: torch.Tensor, text_emb: torch.Tensor,
               sent_emb: torch.Tensor, tops: np.ndarray, deficit: np.ndarray, starts: np.ndarray,
               counts: np.ndarray, cal: np.ndarray, cal_name: str) -> tuple[dict, dict]:
    """(pair threshold, sentence threshold), each given or calibrated on the pairs `cal` (see scoring)."""
    rng = np.random.default_rng(cfg.seed)
    img_idx, txt_idx = scoring.simulated_swaps(cal, cfg.calibration_swaps, rng)
    about = {"calibration_set": cal_name, "calibration_pairs": len(cal), "simulated_swaps": len(img_idx)}
    if cfg.threshold is not None:
        pair = {"value": cfg.threshold, "how": "given"}
    else:
        pair = {**scoring.youden_threshold(stats.fit[cal], scoring.swap_fits(stats, image_emb, text_emb, img_idx,
                                                                               txt_idx)),
                "how": f"calibrated on {cal_name}", **about}
    if cfg.sentence_threshold is not None:
        sentence = {"value": cfg.sentence_threshold, "how": "given"}
    else:
        has = counts[txt_idx] > 0
        alien = starts[txt_idx[has]] + (rng.random(int(has.sum())) * counts[txt_idx[has]]).astype(np.int64)
        alien_deficit = scoring.deficits(sent_emb, tops, image_emb, alien, img_idx[has])
        own = deficit[np.concatenate([np.arange(starts[i], starts[i] + counts[i]) for i in cal])]
        sentence = {**scoring.quantile_threshold(own, alien_deficit, cfg.sentence_fpr),
                    "how": f"calibrated on {cal_name}", **about}
    return pair, sentence


def _trim_rescore(model: Any, processor: Any, cache: Any, image_emb: torch.Tensor, stats: scoring.PairStats,
                  indices: list[int], texts: list[str], batch_size: int) -> np.ndarray:
    """Fit scores of the pairs `indices` with their texts replaced by `texts`."""
    from animatch.clip.embed import embed_chunked
    from animatch.data.text import appearance_chunks

    if not indices:
        return np.empty(0)
    emb = embed_chunked(model, processor, [appearance_chunks(t) for t in texts], batch_size=batch_size,
                        cache=cache)
    fits = []
    n = image_emb.shape[0]
    for start in range(0, len(indices), TRIM_BLOCK):
        idx = indices[start:start + TRIM_BLOCK]
        sims = (image_emb.float() @ emb[start:start + TRIM_BLOCK].float().T).double()  # [n, block]
        own = sims[torch.tensor(idx), torch.arange(len(idx))]
        mean, sd = scoring.mean_sd(sims.sum(0), (sims * sims).sum(0), own, n)
        fits.append(scoring.fit_of(own.numpy(), stats.row_mean[idx], stats.row_sd[idx], mean.numpy(), sd.numpy()))
    return np.concatenate(fits)


def run_audit(cfg: AuditConfig, judge: Any = None) -> int:
    """Run the audit; `judge` (an object with `analyze_batch`) replaces the one --judge-model would load."""
    from animatch.clip.embed import embed_sharded, embed_texts, open_sharded_clip
    from animatch.data.records import title_key

    claim_output(cfg, "audit")
    records, skipped, source = load_records(cfg)
    if len(records) < 2:
        raise UserError(f"need at least 2 records with an appearance text to audit, {source} has {len(records)}")
    started = time.perf_counter()
    state, model, processor, cache = open_sharded_clip(cfg)
    root = Path(cfg.data)
    image_emb, ok, failures, cache_stats = embed_sharded(model, processor, [root / r["file_name"] for r in records],
                                                         cache, state, batch_size=cfg.batch_size, workers=cfg.workers)
    if not state.is_main_process:
        return 0
    if len(ok) < 2:
        raise UserError(f"only {len(ok)} of {len(records)} images could be read; need at least 2")
    device = next(model.parameters()).device
    scored = [records[i] for i in ok]
    sentences = [sentences_of(r["appearance"]) for r in scored]
    counts = np.array([len(s) for s in sentences], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    flat_chunks = [c for r in scored for c in r["appearance_chunks"]]
    emb = embed_texts(model, processor, flat_chunks + [s for ss in sentences for _, s in ss],
                      batch_size=cfg.batch_size, cache=cache, progress=True)
    chunk_emb, sent_emb = emb[:len(flat_chunks)], emb[len(flat_chunks):]
    chunk_owner = torch.tensor([i for i, r in enumerate(scored) for _ in r["appearance_chunks"]])
    text_emb = F.normalize(torch.zeros_like(image_emb).index_add_(0, chunk_owner, chunk_emb), dim=-1)
    sent_owner = np.repeat(np.arange(len(scored)), counts)

    n = len(scored)
    stats = scoring.pair_stats(image_emb, text_emb, device=device)
    title_z = scoring.title_z(image_emb, text_emb, [title_key(str(r.get("title", ""))) for r in scored])
    chunk_cos = scoring.paired_cosines(chunk_emb, image_emb, np.arange(len(flat_chunks)), chunk_owner.numpy())
    rng = np.random.default_rng(cfg.seed + 1)
    reference = np.arange(n) if n <= cfg.reference_images else np.sort(rng.choice(n, cfg.reference_images,
                                                                                   replace=False))
    tops = scoring.sentence_tops(sent_emb, image_emb[torch.as_tensor(reference)], device=device)
    deficit = scoring.deficits(sent_emb, tops, image_emb, np.arange(len(sent_owner)), sent_owner)
    val = np.array([i for i, r in enumerate(scored) if r.get("split") == "val"], dtype=np.int64)
    use_val = cfg.split_dir is not None and len(val) >= cfg.min_calibration_pairs
    cal_name = "the val split" if use_val else (f"all pairs (val has {len(val)} < {cfg.min_calibration_pairs})"
                                                if cfg.split_dir else "all pairs (no --split-dir)")
    pair_t, sent_t = _calibrate(cfg, stats, image_emb, text_emb, sent_emb, tops, deficit, starts, counts,
                                val if use_val else np.arange(n), cal_name)
    warnings = [f"at the {name} threshold, TPR - FPR on the calibration is only {t['youden_j']:.2f} (< {WEAK_J}): "
                f"the model tells simulated {what} from real ones poorly, so these flags are unreliable"
                for name, what, t in (("pair", "swaps", pair_t), ("sentence", "misfits", sent_t))
                if t.get("youden_j", 1.0) < WEAK_J]
    # clean_metadata.jsonl acts on the pair flags, and on the sentence flags only when trimming.
    unreliable = pair_t.get("youden_j", 1.0) < WEAK_J or (cfg.trim_sentences and sent_t.get("youden_j", 1.0) < WEAK_J)
    clip_flag = stats.fit < pair_t["value"]
    sentence_fits = deficit <= sent_t["value"]

    chunk_starts = np.concatenate([[0], np.cumsum([len(r["appearance_chunks"]) for r in scored])])
    rows: list[dict] = []
    for i, r in enumerate(scored):
        s0, c = starts[i], counts[i]
        sents = [{"paragraph": p, "text": t, "cosine": _rounded(tops[s0 + k] - deficit[s0 + k]),
                  "deficit": _rounded(deficit[s0 + k]), "fits": bool(sentence_fits[s0 + k])}
                 for k, (p, t) in enumerate(sentences[i])]
        rows.append({"id": r["id"], "file_name": r["file_name"], "character": r.get("character"),
                     "title": r.get("title"), "split": r.get("split"), "status": "ok", "error": None,
                     "cosine": _rounded(stats.cosine[i]), "fit": _rounded(stats.fit[i]),
                     "z_text": _rounded(stats.z_text[i]), "z_image": _rounded(stats.z_image[i]),
                     "text_rank": int(stats.text_rank[i]), "image_rank": int(stats.image_rank[i]),
                     "title_z": _rounded(title_z[i]),
                     "chunk_cosines": [_rounded(x) for x in chunk_cos[chunk_starts[i]:chunk_starts[i + 1]]],
                     "sentences": sents,
                     "nonfitting_sentences": int(c - sentence_fits[s0:s0 + c].sum()),
                     "clip_flag": bool(clip_flag[i]), "flag": bool(clip_flag[i]), "judge": None})

    # --trim-sentences: a text less its non-fitting sentences (if any is left). A flagged pair is kept trimmed
    # only when it keeps more than half of its sentences (else it describes someone else) and passes the rule.
    trims: dict[int, str] = {}
    if cfg.trim_sentences:
        for i, row in enumerate(rows):
            drop = {k for k, s in enumerate(row["sentences"]) if not s["fits"]}
            if 0 < len(drop) < len(row["sentences"]):
                trims[i] = trimmed_text(sentences[i], drop)
        rescore = [i for i in trims if rows[i]["flag"] and 2 * rows[i]["nonfitting_sentences"] < counts[i]]
        for i, fit in zip(rescore, _trim_rescore(model, processor, cache, image_emb, stats, rescore,
                                                 [trims[i] for i in rescore], cfg.batch_size)):
            rows[i]["trimmed_fit"] = _rounded(fit)

    judge_summary = None
    if judge is not None or cfg.judge_model:
        if judge is None:
            from animatch.judge.judge import Judge

            judge = Judge.from_options(cfg, prefix="judge_")
        flagged_idx, sampled_idx = select_for_judge(stats.fit, clip_flag, max_flagged=cfg.judge_max_pairs,
                                                    sample=cfg.judge_sample, rng=np.random.default_rng(cfg.seed))
        pairs = [(str(root / r["file_name"]), r["appearance"]) for r in scored]
        judge_summary = run_cascade(judge, rows, pairs, flagged_idx, sampled_idx, batch_size=cfg.judge_batch_size,
                                    clears=cfg.judge_clears)

    for i, row in enumerate(rows):
        trimmed = trims.get(i)
        if row["flag"]:
            passes = row.get("trimmed_fit") is not None and row["trimmed_fit"] >= pair_t["value"]
        else:
            passes = trimmed is not None or not (cfg.trim_sentences and row["nonfitting_sentences"])
        row["action"] = ("trim" if trimmed is not None else "keep") if passes else "drop"
        if row["action"] == "trim":
            row["trimmed_appearance"] = trimmed
    by_record = dict(zip(ok, rows))
    failed = {str(p): reason for p, reason in failures}
    all_rows = [by_record.get(k) or {
        "id": r["id"], "file_name": r["file_name"], "character": r.get("character"), "title": r.get("title"),
        "split": r.get("split"), "status": "image_error", "error": failed.get(str(root / r["file_name"]),
                                                                               "unreadable"),
        "flag": None, "action": "drop"} for k, r in enumerate(records)]

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "audit.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in all_rows))
    clean = [clean_record(rec, row.get("trimmed_appearance")) for rec, row in zip(records, all_rows)
             if row["action"] != "drop"]
    write_clean = cfg.force_clean or not unreliable
    if write_clean:
        atomic_write_text(out / "clean_metadata.jsonl",
                          "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in clean))
    else:  # not even an earlier run's file may stand for this run's verdict
        (out / "clean_metadata.jsonl").unlink(missing_ok=True)
    if cache is not None:
        cache_stats["texts_embedded"], cache_stats["texts_cached"] = cache.stats.texts_embedded, \
            cache.stats.texts_cached
    actions = {a: sum(r["action"] == a for r in all_rows) for a in ("keep", "trim", "drop")}
    summary = {
        "model": cfg.model, "source": source, "pairs": len(records), "pairs_scored": n,
        "records_skipped": skipped, "image_failures": [{"file_name": r["file_name"], "reason": r["error"]}
                                                       for r in all_rows if r["status"] != "ok"],
        "threshold": pair_t, "sentence_threshold": sent_t, "flagged_by_clip": int(clip_flag.sum()),
        "flagged": sum(bool(r["flag"]) for r in rows), "sentences": int(len(sent_owner)),
        "nonfitting_sentences": int((~sentence_fits).sum()),
        "pairs_with_nonfitting_sentences": sum(r["nonfitting_sentences"] > 0 for r in rows),
        "actions": actions, "clean_records": len(clean) if write_clean else None,
        "clean_withheld": not write_clean, "trim_sentences": cfg.trim_sentences,
        "fit_quantiles": {f"p{q:02d}": _rounded(np.percentile(stats.fit, q)) for q in (1, 5, 25, 50, 75, 95)},
        "judge": judge_summary, "warnings": warnings, "cache": cache_stats, "processes": state.num_processes,
        "seconds": round(time.perf_counter() - started, 2)}
    write_flagged_html(out / "flagged.html", all_rows, root, summary, max_items=cfg.html_max_items,
                       thumbnail_size=cfg.thumbnail_size)
    write_run_files(out, cfg, summary, report_markdown(summary, all_rows), metrics_name="summary.json")
    for warning in warnings:
        print(f"audit: warning: {warning}")
    if not write_clean:
        print("audit: clean_metadata.jsonl not written: the flags are unreliable (--force-clean writes it anyway)")
    print(f"audit: {n} pairs scored, {summary['flagged']} flagged, {actions['drop']} dropped, {actions['trim']} "
          f"trimmed -> {out}")
    return 0
