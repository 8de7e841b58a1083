"""`animatch download`: AniPersonaCaps from the Hugging Face Hub, metadata plus only the images needed.

The repository's file list decides the layout (`find_metadata`: metadata.jsonl at the root, as in
mrzjy/AniPersonaCaps, or the shallowest one in a subfolder), and `plan_download`, a pure function, maps
the first `--limit` records' file names to repository paths (file names are relative to the metadata
file; images live under images/images_<k>/). All files come from one resolved commit, so metadata and
images match. OUT becomes a dataset root: OUT/metadata.jsonl (the kept lines, verbatim unless the
metadata sat in a subfolder, then file_name gets that prefix) and the images at OUT/<file_name>. Files
already there are not fetched again; a failed image is counted (prepare reports it as a missing file).
An unreachable Hub is one UserError line.
"""

from __future__ import annotations

import json
import posixpath
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    GatedRepoError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from tqdm import tqdm

from animatch.config import DownloadConfig
from animatch.errors import UserError
from animatch.runs import atomic_write_bytes, claim_output, write_run_files

METADATA_NAME = "metadata.jsonl"
DOWNLOAD_THREADS = 8


def find_metadata(repo_files: list[str]) -> str:
    """The repository path of the metadata file: the shallowest `metadata.jsonl` (ties: sorted first)."""
    candidates = [f for f in repo_files if posixpath.basename(f) == METADATA_NAME]
    if not candidates:
        raise UserError(f"the dataset repository has no {METADATA_NAME}; is it AniPersonaCaps?")
    return min(candidates, key=lambda f: (f.count("/"), f))


def plan_download(repo_files: list[str], metadata_path: str,
                  file_names: list[str]) -> tuple[list[str], list[str]]:
    """(repository paths to fetch, file names not in the repository), each in first-seen order, no repeats.

    A file name is relative to the metadata file's folder; a name escaping the repository is "missing".
    """
    available = set(repo_files)
    prefix = posixpath.dirname(metadata_path)
    fetch, missing, seen = [], [], set()
    for name in file_names:
        if name in seen:
            continue
        seen.add(name)
        path = posixpath.normpath(posixpath.join(prefix, name.replace("\\", "/")))
        if path in available:
            fetch.append(path)
        else:
            missing.append(name)
    return fetch, missing


def read_first_records(path: str | Path, limit: int | None,
                       prefix: str = "") -> tuple[list[bytes], list[str]]:
    """The first `limit` non-blank lines (all when None) and the file names they name.

    Lines are kept verbatim (bad ones too: prepare reports them), except that with a `prefix` the
    file_name of a parsable record is rewritten to prefix/file_name.
    """
    lines, names = [], []
    with open(path, "rb") as f:
        for raw in f:
            if limit is not None and len(lines) >= limit:
                break
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
                name = rec.get("file_name") if isinstance(rec, dict) else None
                name = name if isinstance(name, str) else None
            except ValueError:
                rec, name = None, None
            if name is not None and prefix:
                rec["file_name"] = name = posixpath.join(prefix, name)
                raw = json.dumps(rec, ensure_ascii=False).encode("utf-8") + b"\n"
            lines.append(raw if raw.endswith(b"\n") else raw + b"\n")
            if name is not None:
                names.append(name)
    return lines, names


def _hub_error(e: Exception, cfg: DownloadConfig) -> UserError:
    if isinstance(e, OfflineModeIsEnabled):
        return UserError("the Hugging Face Hub is unreachable: HF_HUB_OFFLINE is set (unset it to download)")
    if isinstance(e, GatedRepoError):
        return UserError(f"dataset {cfg.repo} is gated: accept its terms on the Hub and log in "
                         "(`hf auth login`)")
    if isinstance(e, RevisionNotFoundError):
        return UserError(f"revision {cfg.revision!r} not found in dataset {cfg.repo}")
    if isinstance(e, RepositoryNotFoundError):
        return UserError(f"dataset {cfg.repo} not found on the Hub (or private: log in with `hf auth login`)")
    detail = (str(e).strip().splitlines() or [""])[0][:200]
    return UserError(f"cannot reach the Hugging Face Hub for dataset {cfg.repo}: "
                     f"{type(e).__name__}: {detail}")


def run_download(cfg: DownloadConfig) -> int:
    api = HfApi()
    try:
        commit = api.repo_info(cfg.repo, repo_type="dataset", revision=cfg.revision).sha
        repo_files = api.list_repo_files(cfg.repo, repo_type="dataset", revision=commit)
        metadata_path = find_metadata(repo_files)
        local_metadata = hf_hub_download(cfg.repo, metadata_path, repo_type="dataset", revision=commit)
    except UserError:
        raise
    except Exception as e:
        raise _hub_error(e, cfg) from None
    out = claim_output(cfg, "download")  # after the Hub answered: an unreachable Hub leaves no --out behind
    lines, names = read_first_records(local_metadata, cfg.limit, posixpath.dirname(metadata_path))
    # the names now carry the metadata's folder, i.e. are relative to the repository root, as OUT's will be
    fetch, missing = plan_download(repo_files, METADATA_NAME, names)
    atomic_write_bytes(out / METADATA_NAME, b"".join(lines))
    todo = [p for p in fetch if not ((out / p).is_file() and (out / p).stat().st_size > 0)]

    def fetch_one(path: str) -> str | None:
        try:
            hf_hub_download(cfg.repo, path, repo_type="dataset", revision=commit, local_dir=out)
            return None
        except Exception as e:
            return f"{path}: {type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:160]}"

    failures = []
    with ThreadPoolExecutor(DOWNLOAD_THREADS) as pool, \
            tqdm(total=len(todo), desc="downloading images", unit="img", dynamic_ncols=True) as bar:
        for failure in pool.map(fetch_one, todo):
            bar.update()
            if failure:
                failures.append(failure)
    metrics = {"repo": cfg.repo, "commit": commit, "metadata": metadata_path, "records": len(lines),
               "images_needed": len(fetch), "images_already_present": len(fetch) - len(todo),
               "images_downloaded": len(todo) - len(failures), "images_failed": len(failures),
               "failures": failures[:20], "images_not_in_repo": len(missing), "not_in_repo": missing[:20]}
    summary = (f"download: {len(lines)} records of {cfg.repo}@{commit[:8]} -> {out}; images: "
               f"{metrics['images_downloaded']} downloaded, "
               f"{metrics['images_already_present']} already there, "
               f"{len(failures)} failed, {len(missing)} named but not in the repository. "
               f"Next: animatch prepare --data {out} --out <dir>.")
    write_run_files(out, cfg, metrics, f"# download report\n\n{summary}\n",
                    metrics_name="download_report.json", report_name="download_report.md")
    print(summary)
    return 0
