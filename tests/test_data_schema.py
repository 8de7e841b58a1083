"""Streaming validation of metadata.jsonl lines, and reading prepared splits."""

from __future__ import annotations

import json

import pytest

from animatch.data.schema import REQUIRED_FIELDS, iter_metadata, load_split, read_jsonl, validate_record
from animatch.errors import UserError

GOOD = {"file_name": "images/a.png", "title": "T", "character": "C", "appearance": "She has red hair.",
        "personality": "", "url": ""}


def _write_lines(path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def test_every_bad_line_kind_gets_its_reason_and_good_lines_survive(tmp_path):
    def enc(obj) -> bytes:
        return json.dumps(obj).encode()

    path = tmp_path / "metadata.jsonl"
    _write_lines(path, [
        b"\xef\xbb\xbf" + enc(GOOD),                                    # 1 BOM on the first line is fine
        b'{"file_name": "x.png", "title": ',                            # 2 malformed JSON
        b"[1, 2]",                                                      # 3 array
        enc({k: v for k, v in GOOD.items() if k != "url"}),             # 4 missing field
        enc({**GOOD, "appearance": "   "}),                             # 5 empty appearance
        enc({**GOOD, "title": 7}),                                      # 6 wrong type
        b'{"file_name": "b.png", "title": "caf\xe9"}',                  # 7 latin-1 byte
        b"   ",                                                         # 8 blank: no record
        enc({**GOOD, "personality": None, "extra": [1]}),               # 9 null optional -> "", extra kept
        b'"just a string"',                                             # 10 not an object
    ])
    rows = list(iter_metadata(path))
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5, 6, 7, 9, 10]
    good = {n: rec for n, rec, err in rows if err is None}
    assert set(good) == {1, 9}
    assert good[1] == GOOD
    assert good[9]["personality"] == "" and good[9]["extra"] == [1]
    reasons = {n: err for n, _, err in rows if err}
    assert reasons[2].startswith("malformed JSON:")
    assert reasons[3] == "not a JSON object: got an array"
    assert reasons[4] == "missing field: url"
    assert reasons[5] == "empty field: appearance"
    assert reasons[6].startswith("wrong type: title is an integer")
    assert reasons[7].startswith("not UTF-8: invalid byte 0xe9")
    assert reasons[10] == "not a JSON object: got a string"


def test_personality_and_url_may_be_empty_but_other_fields_not():
    for key in REQUIRED_FIELDS:
        reason = validate_record({**GOOD, key: ""})
        assert (reason is None) == (key in ("personality", "url")), key


def test_missing_metadata_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="metadata file not found"):
        list(iter_metadata(tmp_path / "nope.jsonl"))


def test_load_split_reads_records_and_rejects_bad_dirs(tmp_path):
    (tmp_path / "val.jsonl").write_text(json.dumps({"id": "1"}) + "\n\n" + json.dumps({"id": "2"}) + "\n")
    assert [r["id"] for r in load_split(tmp_path, "val")] == ["1", "2"]
    with pytest.raises(UserError, match="no train.jsonl"):
        load_split(tmp_path, "train")
    with pytest.raises(UserError, match="unknown split"):
        load_split(tmp_path, "dev")
    (tmp_path / "test.jsonl").write_text("{broken\n")
    with pytest.raises(UserError, match="test.jsonl:1: malformed JSON"):
        list(read_jsonl(tmp_path / "test.jsonl"))
