"""The CLIP -> LLaVA cascade: which pairs the judge sees, and what its verdicts change.

CLIP scores every pair cheaply; the two-stage judge (`animatch.judge.judge.Judge`, or any object with its
`analyze_batch(pairs) -> results`) sees only the CLIP-flagged pairs (lowest fit first, at most `max_flagged`)
plus a seeded random sample of unflagged pairs, which estimates how often the judge disagrees with CLIP's
"fits" (reported, never acted on). With `clears`, a flagged pair that the judge scores as a match is no
longer flagged; its CLIP flag stays in the row (`clip_flag`). Errors and unparsed answers never clear a flag.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from animatch.judge.batching import analyze_in_batches

JUDGE_FIELDS = ("score", "score_expected", "match", "status", "analysis", "description", "error")


def select_for_judge(fits: np.ndarray, flagged: np.ndarray, *, max_flagged: int | None, sample: int,
                     rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """(flagged pair indices to judge, lowest fit first; a random sample of unflagged pair indices)."""
    flagged_idx = np.flatnonzero(flagged)
    flagged_idx = flagged_idx[np.argsort(fits[flagged_idx], kind="stable")]
    if max_flagged is not None:
        flagged_idx = flagged_idx[:max_flagged]
    unflagged = np.flatnonzero(~flagged)
    sampled = rng.choice(unflagged, size=min(sample, len(unflagged)), replace=False) if sample > 0 else []
    return [int(i) for i in flagged_idx], sorted(int(i) for i in sampled)


def run_cascade(judge: Any, rows: list[dict], pairs: list[tuple[str, str]], flagged: list[int], sampled: list[int],
                *, batch_size: int, clears: bool, progress: bool = True) -> dict:
    """Judge `pairs[i]` = (image path, text) for i in flagged + sampled; add the verdict to `rows[i]["judge"]`
    and settle `rows[i]["flag"]`. Returns the cascade's summary."""
    todo = [(i, "flagged") for i in flagged] + [(i, "sample") for i in sampled]
    results = analyze_in_batches(judge, [pairs[i] for i, _ in todo], batch_size, desc="judging" if progress else None)
    for (i, role), result in zip(todo, results):
        rows[i]["judge"] = {"role": role, **{k: result.get(k) for k in JUDGE_FIELDS}}
        if role == "flagged" and clears and result.get("status") == "ok" and result.get("match"):
            rows[i]["flag"] = False

    def judged(role: str) -> list[dict]:
        return [rows[i]["judge"] for i, r in todo if r == role]

    def scores(role: str) -> list[float]:
        return [j["score"] for j in judged(role) if j["score"] is not None]

    summary = {"judged_flagged": len(flagged), "judged_sample": len(sampled),
               "cleared": sum(1 for i in flagged if not rows[i]["flag"]),
               "confirmed": sum(1 for j in judged("flagged") if j["status"] == "ok" and not j["match"]),
               "sample_judged_mismatch": sum(1 for j in judged("sample") if j["status"] == "ok" and not j["match"]),
               "errors": sum(1 for i, _ in todo if rows[i]["judge"]["status"] == "error"),
               "unparsed": sum(1 for i, _ in todo if rows[i]["judge"]["status"] == "unparsed")}
    for role in ("flagged", "sample"):
        values = scores(role)
        summary[f"mean_score_{role}"] = round(float(np.mean(values)), 3) if values else None
    ok_sample = sum(1 for j in judged("sample") if j["status"] == "ok")
    summary["sample_mismatch_rate"] = round(summary["sample_judged_mismatch"] / ok_sample, 4) if ok_sample else None
    return summary
