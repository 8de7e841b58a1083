"""The audit's human outputs: report.md (numbers, rules, worst pairs) and flagged.html (a page to review it).

flagged.html is one static, self-contained page. Sections: the flagged pairs (lowest fit first), the pairs
kept whose texts hold non-fitting sentences (largest deficit first), and the unreadable images. Each pair is
an `<article class="pair" id="pair-<id>">` with a small JPEG thumbnail embedded as base64 (the page works
when moved or mailed), the character, title and file, its scores (and the judge's verdict), and the
appearance text with each sentence's cosine and deficit on hover; non-fitting sentences are highlighted and
the worst one is outlined. Every text from the data goes through `html.escape`, so a description holding
markup is shown, never run."""

from __future__ import annotations

import base64
import io
from html import escape
from pathlib import Path

from animatch.data.images import ImageLoadError, load_image
from animatch.runs import atomic_write_text, markdown_table

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1100px;color:#222}
article.pair{display:flex;gap:1em;border-top:1px solid #ccc;padding:.8em 0}
article.pair img{flex:none;object-fit:contain;background:#f4f4f4}
.info{flex:1;min-width:0} h3{margin:0 0 .3em} small{color:#666;font-weight:normal}
table.scores{border-collapse:collapse;font-size:.85em;margin:.3em 0}
table.scores td,table.scores th{border:1px solid #ddd;padding:2px 6px;text-align:right}
p.text{line-height:1.5} mark.bad{background:#ffd4d4} .worst{outline:2px solid #c00}
.judge{font-size:.9em;color:#333;background:#f5f5ff;padding:.3em .5em}
"""
SHOWN = 20
SCORE_COLUMNS = (("fit", "fit"), ("cosine", "cosine"), ("text rank", "text_rank"), ("image rank", "image_rank"),
                 ("title z", "title_z"), ("z text", "z_text"), ("z image", "z_image"))


def thumbnail_data_uri(path: str | Path, size: int) -> str | None:
    """A JPEG thumbnail (longest side `size`) as a data: URI, or None when the image cannot be read."""
    try:
        image = load_image(path)
    except ImageLoadError:
        return None
    image.thumbnail((size, size))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt(value) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _text_html(row: dict) -> str:
    sentences = row.get("sentences") or []
    worst = max(range(len(sentences)), key=lambda k: sentences[k]["deficit"], default=None)
    paragraphs: dict[int, list[str]] = {}
    for k, s in enumerate(sentences):
        tip = escape(f"cosine {s['cosine']:.3f} · deficit {s['deficit']:.3f}")
        classes = ["sentence"] + ([] if s["fits"] else ["bad"]) + (["worst"] if k == worst else [])
        tag = "span" if s["fits"] else "mark"
        paragraphs.setdefault(s["paragraph"], []).append(
            f'<{tag} class="{" ".join(classes)}" title="{tip}">{escape(s["text"])}</{tag}>')
    return "".join(f'<p class="text">{" ".join(parts)}</p>' for _, parts in sorted(paragraphs.items()))


def _pair_html(row: dict, root: Path, thumbnail_size: int) -> str:
    uri = thumbnail_data_uri(root / row["file_name"], thumbnail_size)
    image = (f'<img src="{uri}" alt="{escape(row["character"])}" width="{thumbnail_size}" '
             f'height="{thumbnail_size}">' if uri else '<div class="noimage">image unreadable</div>')
    head = "".join(f"<th>{escape(label)}</th>" for label, _ in SCORE_COLUMNS)
    cells = "".join(f"<td>{_fmt(row.get(key))}</td>" for _, key in SCORE_COLUMNS)
    judge = ""
    if row.get("judge"):
        j = row["judge"]
        verdict = f"score {_fmt(j['score'])}/10" if j["score"] is not None else escape(j["status"])
        judge = (f'<div class="judge"><b>Judge ({escape(j["role"])}):</b> {verdict}. '
                 f'{escape(j.get("analysis") or j.get("error") or "")}</div>')
    status = "flagged" if row["flag"] else "kept"
    return (f'<article class="pair {status}" id="pair-{escape(row["id"])}" data-id="{escape(row["id"])}" '
            f'data-action="{escape(row["action"])}">{image}<div class="info">'
            f'<h3>{escape(row["character"])} <small>{escape(row.get("title") or "")}</small></h3>'
            f'<div><small>{escape(row["file_name"])} · action: {escape(row["action"])}</small></div>'
            f'<table class="scores"><tr>{head}</tr><tr>{cells}</tr></table>{judge}{_text_html(row)}</div></article>')


def _section(title: str, anchor: str, rows: list[dict], root: Path, max_items: int, thumbnail_size: int) -> str:
    shown = rows[:max_items]
    more = f"<p>{len(rows) - len(shown)} more in audit.jsonl.</p>" if len(rows) > len(shown) else ""
    body = "".join(_pair_html(r, root, thumbnail_size) for r in shown) or "<p>None.</p>"
    return f'<section id="{anchor}"><h2>{escape(title)} ({len(rows)})</h2>{body}{more}</section>'


def write_flagged_html(path: str | Path, rows: list[dict], root: str | Path, summary: dict, *,
                       max_items: int = 300, thumbnail_size: int = 160) -> None:
    """Write the review page for the audit rows (see the module docstring)."""
    root = Path(root)
    scored = [r for r in rows if r["status"] == "ok"]
    flagged = sorted((r for r in scored if r["flag"]), key=lambda r: r["fit"])
    with_bad = sorted((r for r in scored if not r["flag"] and r["nonfitting_sentences"]),
                      key=lambda r: -max(s["deficit"] for s in r["sentences"]))
    unreadable = [r for r in rows if r["status"] != "ok"]
    t = summary["threshold"]
    intro = (f"<p>{summary['pairs_scored']} pairs scored with <code>{escape(str(summary['model']))}</code>; "
             f"{len(flagged)} flagged (fit &lt; {t['value']:.3f}, {escape(t['how'])}); "
             f"{len(with_bad)} kept pairs hold sentences that do not fit their image "
             f"(deficit &gt; {summary['sentence_threshold']['value']:.3f}). Hover a sentence for its scores; "
             "highlighted sentences do not fit, the outlined one fits worst.</p>")
    failures = "".join(f"<li>{escape(r['file_name'])}: {escape(r['error'] or '')}</li>" for r in unreadable)
    page = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>animatch audit: {len(flagged)} flagged pairs</title><style>{STYLE}</style></head><body>"
            f"<h1>animatch audit</h1>{intro}"
            + _section("Flagged pairs", "flagged", flagged, root, max_items, thumbnail_size)
            + _section("Kept pairs with non-fitting sentences", "sentences", with_bad, root, max_items,
                       thumbnail_size)
            + f'<section id="unreadable"><h2>Unreadable images ({len(unreadable)})</h2><ul>{failures}</ul></section>'
            + "</body></html>\n")
    atomic_write_text(path, page)

def _threshold_line(name: str, t: dict, direction: str) -> str:
    line = f"- {name}: {t['value']:.4f} ({direction}; {t['how']}"
    if "youden_j" in t:
        line += (f": {t['calibration_pairs']} pairs vs {t['simulated_swaps']} simulated swaps, Youden J "
                 f"{t['youden_j']:.3f}, TPR {t['tpr']:.3f}, FPR {t['fpr']:.3f}")
    return line + ")"


def report_markdown(summary: dict, rows: list[dict]) -> str:
    """The human report of an audit (summary.json holds the same numbers)."""
    a = summary["actions"]
    lines = ["# animatch audit", "",
             f"{summary['pairs_scored']} of {summary['pairs']} pairs of `{summary['source']}` scored with "
             f"`{summary['model']}`; {len(summary['image_failures'])} unreadable images, "
             f"{len(summary['records_skipped'])} input lines skipped.", "",
             "## Rules", "",
             "- fit = mean of the pair's cosine z-scores against its image's cosines to all other texts and its "
             "text's cosines to all other images; a pair is flagged when fit is below the pair threshold.",
             "- A sentence does not fit when its deficit (mean cosine of the sentence with its best-fitting "
             "images minus its cosine with the pair's image) is above the sentence threshold.",
             "- Calibration: the pair threshold maximises Youden's J between the calibration pairs as they are and "
             "simulated swaps (texts of other calibration pairs); the sentence threshold lets at most "
             "--sentence-fpr of the calibration pairs' own sentences be non-fitting (TPR: share of alien sentences, "
             "from other pairs, above it).",
             _threshold_line("pair threshold", summary["threshold"], "flag when fit is below"),
             _threshold_line("sentence threshold", summary["sentence_threshold"], "misfit when deficit is above"),
             "", "## Result", "",
             f"- flagged by CLIP: {summary['flagged_by_clip']}"
             + (f"; flagged after the judge: {summary['flagged']}" if summary["judge"] else ""),
             f"- non-fitting sentences: {summary['nonfitting_sentences']} of {summary['sentences']}, in "
             f"{summary['pairs_with_nonfitting_sentences']} pairs",
             ("- clean_metadata.jsonl: not written, the flags it would act on are unreliable (see Warnings; "
              "--force-clean writes it anyway): " if summary["clean_withheld"] else
              f"- clean_metadata.jsonl: {summary['clean_records']} records: ")
             + f"{a['keep']} kept, {a['trim']} trimmed, {a['drop']} dropped"
             + ("; --trim-sentences" if summary["trim_sentences"] else ""),
             "- fit quantiles: " + ", ".join(f"{k} {v}" for k, v in summary["fit_quantiles"].items())]
    j = summary["judge"]
    if j:
        lines += [f"- judge: {j['judged_flagged']} flagged pairs judged ({j['confirmed']} confirmed as mismatches, "
                  f"{j['cleared']} cleared), {j['judged_sample']} unflagged pairs sampled ("
                  f"{j['sample_judged_mismatch']} judged mismatched); {j['errors']} errors, {j['unparsed']} "
                  "unparsed"]
    if summary["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in summary["warnings"]]
    flagged = sorted((r for r in rows if r.get("flag")), key=lambda r: r["fit"])[:SHOWN]
    if flagged:
        table = [{"character": r["character"], "title": r["title"], "fit": r["fit"], "cosine": r["cosine"],
                  "text rank": r["text_rank"], "image rank": r["image_rank"], "action": r["action"]} for r in flagged]
        lines += ["", f"## Lowest-fit flagged pairs (first {len(flagged)}; all in flagged.html)", "",
                  markdown_table(table, floatfmt=".3f")]
    if summary["image_failures"]:
        lines += ["", "## Unreadable images", "", markdown_table(summary["image_failures"][:SHOWN])]
    return "\n".join(lines)
