"""Line-aligned byte ranges of JSONL files (the Ray build's read tasks), without Ray."""

from __future__ import annotations

import json

import pytest

from meteora.distributed.jsonl_ranges import auto_range_bytes, jsonl_rows, line_ranges


def _lines_of(path, parts):
    rows = [jsonl_rows(str(path), p) for p in parts]
    return [(line, rec, err) for r in rows for line, rec, err in zip(r["line"], r["record"], r["error"], strict=True)]


@pytest.mark.parametrize("size", [1, 7, 64, 1000, 10**6])
@pytest.mark.parametrize("trailing_newline", [True, False])
def test_ranges_cover_the_file_on_line_boundaries_and_number_lines_as_python_reads_them(tmp_path, size,
                                                                                     trailing_newline):
    lines = [json.dumps({"text": f"passage {i} " + "é" * (i % 5)}) for i in range(40)]
    lines[7] = ""  # a blank line
    lines[12] = "  "
    body = "\n".join(lines) + ("\n" if trailing_newline else "")
    f = tmp_path / "c.jsonl"
    f.write_text(body, encoding="utf-8")
    data = f.read_bytes()
    parts = line_ranges(f, size)
    assert parts[0].start == 0 and parts[-1].end == len(data)
    assert all(a.end == b.start for a, b in zip(parts, parts[1:], strict=False))
    assert all(data[p.end - 1 : p.end] == b"\n" for p in parts[:-1])  # every cut is just after a newline
    for p in parts:  # each range starts at the line its number says
        assert data[: p.start].count(b"\n") + 1 == p.first_line
    if size == 1:
        assert len(parts) == len(data.splitlines())
    got = _lines_of(f, parts)
    want = [(n, json.dumps(json.loads(line)), "") for n, line in enumerate(lines, 1) if line.strip()]
    assert got == want


def test_a_bad_line_in_a_later_range_names_its_file_and_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    lines = [json.dumps({"text": f"p{i}"}) for i in range(30)]
    lines[21] = '{"text": "unterminated'
    lines[25] = '["a list"]'
    f.write_text("\n".join(lines) + "\n")
    errors = [(line, err) for line, _, err in _lines_of(f, line_ranges(f, 64)) if err]
    assert [line for line, _ in errors] == [22, 26]
    assert errors[0][1].startswith(f"{f}:22: not valid JSON")
    assert "expected an object" in errors[1][1]


def test_empty_file_and_bad_sizes(tmp_path):
    f = tmp_path / "empty.jsonl"
    f.write_bytes(b"")
    assert line_ranges(f, 100) == []
    with pytest.raises(ValueError):
        line_ranges(f, 0)
    assert auto_range_bytes(0) == 1 << 16 and auto_range_bytes(1 << 40) == 1 << 26
