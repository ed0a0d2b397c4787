"""meteora.corpus.read_passages: JSONL, JSON and plain-text passage files."""

from __future__ import annotations

import json

import pytest

from meteora.corpus import read_passages
from meteora.errors import InvalidInputError


def test_jsonl_objects_and_strings(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text(
        '{"id": "a", "text": "Aspirin.", "doc_id": "d1", "position": 2, "year": 2000}\n'
        "\n"  # blank lines are skipped
        '"A bare string passage."\n'
        '{"text": "Fever — 38,5 °C."}\n',
        encoding="utf-8",
    )
    ps = read_passages(f)
    assert [p.id for p in ps] == ["a", "1", "2"]
    assert ps[0].doc_id == "d1" and ps[0].position == 2 and ps[0].metadata["year"] == 2000
    assert ps[1].text == "A bare string passage."
    assert ps[2].text == "Fever — 38,5 °C."


def test_json_list(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps([{"id": "x", "text": "One."}, "Two."]), encoding="utf-8")
    ps = read_passages(str(f))
    assert [(p.id, p.text) for p in ps] == [("x", "One."), ("1", "Two.")]


def test_plain_text_one_per_line(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("First line.\n\n  \nSecond line.\n", encoding="utf-8")
    ps = read_passages(f)
    assert [p.text for p in ps] == ["First line.", "Second line."]
    assert [p.id for p in ps] == ["0", "1"]


def test_bad_json_line_names_file_and_line(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text('{"text": "ok"}\n{"text": "ok2"}\n{"text": broken}\n', encoding="utf-8")
    with pytest.raises(InvalidInputError) as info:
        read_passages(f)
    assert f"{f}:3" in str(info.value)
    assert "not valid JSON" in str(info.value)


def test_jsonl_missing_text_field(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text('{"text": "ok"}\n{"id": "b", "body": "no text"}\n', encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"c\.jsonl:2: object has no 'text' field .*body"):
        read_passages(f)


def test_jsonl_wrong_value_type(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text('{"text": "ok"}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r":2: expected an object"):
        read_passages(f)


def test_json_not_a_list(tmp_path):
    f = tmp_path / "c.json"
    f.write_text('{"text": "one"}', encoding="utf-8")
    with pytest.raises(InvalidInputError, match="expected a JSON list"):
        read_passages(f)


def test_json_syntax_error_has_line(tmp_path):
    f = tmp_path / "c.json"
    f.write_text('[\n  "ok",\n  oops\n]', encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"c\.json:3: not valid JSON"):
        read_passages(f)


@pytest.mark.parametrize("name,content", [("e.jsonl", ""), ("e.jsonl", "\n\n"), ("e.json", "[]"), ("e.txt", "\n  \n")])
def test_empty_file(tmp_path, name, content):
    f = tmp_path / name
    f.write_text(content, encoding="utf-8")
    with pytest.raises(InvalidInputError, match="holds no passages"):
        read_passages(f)


def test_missing_file(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        read_passages(tmp_path / "nope.jsonl")


def test_duplicate_ids_name_the_file(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', encoding="utf-8")
    with pytest.raises(InvalidInputError) as info:
        read_passages(f)
    assert str(f) in str(info.value) and "duplicate passage id 'a'" in str(info.value)


def test_empty_text_in_file(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text('{"id": "a", "text": "   "}\n', encoding="utf-8")
    with pytest.raises(InvalidInputError, match="empty text"):
        read_passages(f)
