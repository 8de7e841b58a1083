"""`animatch download` offline: the pure file selection, and the whole flow against a fake Hub."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from animatch.cli import main
from animatch.data import download
from animatch.data.download import find_metadata, plan_download, read_first_records
from animatch.data.schema import read_jsonl
from animatch.errors import UserError

REPO_FILES = [".gitattributes", "README.md", "metadata.jsonl", "images/anime_characters.png",
              "images/images_23/a.png", "images/images_16/b.jpg", "images/images_23/c.png"]


def test_find_metadata_prefers_the_shallowest():
    assert find_metadata(REPO_FILES) == "metadata.jsonl"
    nested = ["x/y/metadata.jsonl", "data/metadata.jsonl", "data/images/a.png"]
    assert find_metadata(nested) == "data/metadata.jsonl"
    with pytest.raises(UserError, match="no metadata.jsonl"):
        find_metadata(["README.md"])


def test_plan_download_selects_only_the_named_images():
    names = ["images/images_23/a.png", "images/images_16/b.jpg", "images/images_23/a.png",
             "images/images_99/gone.png", "../metadata.jsonl", "./images/images_23/c.png"]
    fetch, missing = plan_download(REPO_FILES, "metadata.jsonl", names)
    assert fetch == ["images/images_23/a.png", "images/images_16/b.jpg", "images/images_23/c.png"]
    assert missing == ["images/images_99/gone.png", "../metadata.jsonl"]
    nested = ["data/metadata.jsonl", "data/images/images_1/a.png", "images/images_1/a.png"]
    assert plan_download(nested, "data/metadata.jsonl", ["images/images_1/a.png"]) == (
        ["data/images/images_1/a.png"], [])


def test_read_first_records_keeps_lines_verbatim_and_applies_limit_and_prefix(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"file_name": "images/a.png", "title": "caf\xc3\xa9"}\n\n{broken\n'
                     b'{"file_name": "images/b.png"}\n{"file_name": "images/c.png"}')
    lines, names = read_first_records(path, 3)
    assert lines[1] == b"{broken\n" and names == ["images/a.png", "images/b.png"]
    lines, names = read_first_records(path, None, prefix="data")
    assert len(lines) == 4 and lines[-1].endswith(b"\n")
    assert names == ["data/images/a.png", "data/images/b.png", "data/images/c.png"]
    assert json.loads(lines[0]) == {"file_name": "data/images/a.png", "title": "café"}


@pytest.fixture()
def fake_hub(tmp_path, fixtures_dir, monkeypatch):
    """A fake dataset repo laid out like the real one (nested images), metadata in a subfolder `data/`."""
    repo = tmp_path / "hub_repo"
    lines = []
    for raw in (fixtures_dir / "metadata.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(raw)
        src = fixtures_dir / rec["file_name"]
        rec["file_name"] = rec["file_name"].replace("images/", "images/images_23/", 1) \
            if "images_" not in rec["file_name"] else rec["file_name"]
        if src.is_file():
            (repo / "data" / rec["file_name"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, repo / "data" / rec["file_name"])
        lines.append(json.dumps(rec, ensure_ascii=False))
    (repo / "data" / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    files = sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file())
    fetched: list[str] = []

    class FakeApi:
        def repo_info(self, repo_id, repo_type=None, revision=None):
            assert repo_type == "dataset"
            return SimpleNamespace(sha="0123456789abcdef0123456789abcdef01234567")

        def list_repo_files(self, repo_id, repo_type=None, revision=None):
            return files

    def fake_hf_hub_download(repo_id, filename, *, repo_type=None, revision=None, local_dir=None):
        assert revision == "0123456789abcdef0123456789abcdef01234567"
        if local_dir is None:
            return str(repo / filename)
        fetched.append(filename)
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo / filename, target)
        return str(target)

    monkeypatch.setattr(download, "HfApi", FakeApi)
    monkeypatch.setattr(download, "hf_hub_download", fake_hf_hub_download)
    return fetched


def test_download_then_prepare_against_a_fake_hub(fake_hub, tmp_path, capsys):
    out = tmp_path / "dataset"
    assert main(["download", "--out", str(out), "--limit", "2"]) == 0
    assert sorted(fake_hub) == ["data/images/images_23/737835d6-eeee-43c7-88d7-74c63a71b178.png",
                                "data/images/images_23/be3ff5f2-a584-49d6-9d6b-17a951ea825a.png"]
    records = list(read_jsonl(out / "metadata.jsonl"))
    assert [r["character"] for r in records] == ["Frieren", "Chika Fujiwara"]
    assert all((out / r["file_name"]).is_file() for r in records)
    report = json.loads((out / "download_report.json").read_text())
    assert report["images_downloaded"] == 2 and report["metadata"] == "data/metadata.jsonl"

    fake_hub.clear()
    assert main(["download", "--out", str(out)]) == 0  # all 3 records; 2 images already there
    assert fake_hub == []
    report = json.loads((out / "download_report.json").read_text())
    assert report["images_already_present"] == 2 and report["images_not_in_repo"] == 1
    assert "1 named but not in the repository" in capsys.readouterr().out
    assert main(["prepare", "--data", str(out), "--out", str(tmp_path / "prepared"), "--workers", "1"]) == 0
    assert json.loads((tmp_path / "prepared" / "prepare_report.json").read_text())["kept"] == 2


def test_unreachable_hub_is_one_line(tmp_path, monkeypatch, capsys):
    class DeadApi:
        def repo_info(self, *a, **kw):
            raise ConnectionError("[Errno -2] Name or service not known\nmore detail")

    monkeypatch.setattr(download, "HfApi", DeadApi)
    assert main(["download", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [("animatch download: error: cannot reach the Hugging Face Hub for dataset "
                    "mrzjy/AniPersonaCaps: ConnectionError: [Errno -2] Name or service not known")]
    assert main(["download", "--out", str(tmp_path / "o"), "--limit", "0"]) == 2


def test_offline_mode_is_a_user_error_without_traceback(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "animatch.cli", "download", "--out", str(tmp_path / "o")],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        ("animatch download: error: the Hugging Face Hub is unreachable: "
         "HF_HUB_OFFLINE is set (unset it to download)")]
    assert not (tmp_path / "o").exists()
