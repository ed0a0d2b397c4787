"""Core value types: Passage, Hit, Ranking, to_passages, check_query(ies)."""

from __future__ import annotations

import json

import pytest

from meteora.errors import InvalidInputError, MeteoraError
from meteora.types import Hit, Passage, Ranking, check_queries, check_query, to_passages


# ------------------------------------------------------------------ Passage
def test_passage_defaults_doc_id_to_id():
    p = Passage("Aspirin lowers fever.", id="p1")
    assert p.doc_id == "p1"
    assert p.position == 0
    assert dict(p.metadata) == {}


def test_passage_rejects_bad_fields():
    with pytest.raises(InvalidInputError, match="text must be a str"):
        Passage(123, id="x")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="id must be a non-empty str"):
        Passage("t", id="")
    with pytest.raises(InvalidInputError, match="position must be a non-negative int"):
        Passage("t", id="x", position=-1)
    with pytest.raises(InvalidInputError, match="position"):
        Passage("t", id="x", position=True)  # type: ignore[arg-type]


def test_passage_doc_id_coerced_to_str():
    p = Passage("t", id="x", doc_id=123)  # type: ignore[arg-type]
    assert p.doc_id == "123"


def test_passage_to_dict_round_trip():
    p = Passage("Fever is common.", id="a", doc_id="d", position=3, metadata={"year": 2001})
    d = p.to_dict()
    json.dumps(d)  # serialisable
    (back,) = to_passages([d])
    assert back == p
    assert dict(back.metadata) == {"year": 2001}


def test_passage_repr_truncates_long_text():
    long = "word " * 100
    r = repr(Passage(long, id="long"))
    assert "…" in r
    assert len(r) < 200
    assert "id='long'" in r
    short = repr(Passage("short text", id="s"))
    assert "short text" in short and "…" not in short


def test_invalid_input_error_is_meteora_and_value_error():
    assert issubclass(InvalidInputError, MeteoraError)
    assert issubclass(InvalidInputError, ValueError)


# ------------------------------------------------------------------ to_passages
def test_to_passages_mixed_inputs():
    given = Passage("Third.", id="p3", doc_id="doc9", position=2)
    ps = to_passages(
        [
            "First passage.",
            {"text": "Second.", "id": "p2", "doc_id": "D", "position": 1, "year": 1999},
            given,
        ]
    )
    assert [p.id for p in ps] == ["0", "p2", "p3"]
    assert ps[0].doc_id == "0" and ps[0].position == 0
    assert ps[1].doc_id == "D" and ps[1].position == 1
    assert ps[1].metadata["year"] == 1999  # unknown keys go to metadata
    assert ps[2] is given


def test_to_passages_dict_aliases_and_metadata_merge():
    ps = to_passages(
        [
            {"contents": "A.", "_id": "x"},
            {"content": "B.", "metadata": {"src": "m"}, "extra": 1},
        ]
    )
    assert [p.text for p in ps] == ["A.", "B."]
    assert ps[0].id == "x"
    assert ps[1].id == "1"
    assert dict(ps[1].metadata) == {"src": "m", "extra": 1}


def test_to_passages_numeric_ids_become_str():
    ps = to_passages([{"text": "a", "id": 7, "doc_id": 3}])
    assert ps[0].id == "7" and ps[0].doc_id == "3"


def test_to_passages_float_position_is_int():
    (p,) = to_passages([{"text": "a", "position": 2.0}])
    assert p.position == 2 and isinstance(p.position, int)


def test_ids_override():
    ps = to_passages(["a", {"text": "b", "id": "old"}, Passage("c", id="pc", doc_id="D")], ids=["x", "y", "z"])
    assert [p.id for p in ps] == ["x", "y", "z"]
    # a doc_id that merely defaulted to the old id follows the new id; an explicit one stays
    assert ps[0].doc_id == "x"
    assert ps[1].doc_id == "y"
    assert ps[2].doc_id == "D"


def test_ids_wrong_length():
    with pytest.raises(InvalidInputError, match="got 1 ids for 2 passages"):
        to_passages(["a", "b"], ids=["x"])


def test_duplicate_ids_names_both_indices():
    with pytest.raises(InvalidInputError) as info:
        to_passages([{"text": "a", "id": "dup"}, "b", {"text": "c", "id": "dup"}])
    msg = str(info.value)
    assert "'dup'" in msg
    assert "#0" in msg and "#2" in msg


def test_duplicate_ids_via_override():
    with pytest.raises(InvalidInputError, match="duplicate passage id 'x'"):
        to_passages(["a", "b"], ids=["x", "x"])


def test_duplicate_between_default_and_explicit_id():
    # passage #1 gets the default id "1", which passage #0 already claimed explicitly
    with pytest.raises(InvalidInputError, match="duplicate"):
        to_passages([{"text": "a", "id": "1"}, "b"])


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_text_rejected(text):
    with pytest.raises(InvalidInputError, match="empty text"):
        to_passages(["ok", text])


def test_empty_text_allowed_when_asked():
    ps = to_passages(["ok", ""], allow_empty_text=True)
    assert ps[1].text == ""


def test_missing_text_key():
    with pytest.raises(InvalidInputError, match="without a 'text' key"):
        to_passages([{"id": "a", "body": "x"}])


@pytest.mark.parametrize("bad", [3, 1.5, None, b"bytes", ["nested"]])
def test_wrong_item_type(bad):
    with pytest.raises(InvalidInputError, match="passage #1 has type"):
        to_passages(["ok", bad])


@pytest.mark.parametrize("bad", ["a single string", {"text": "a dict"}, b"bytes"])
def test_single_item_instead_of_list(bad):
    with pytest.raises(InvalidInputError, match="wrap it in a list"):
        to_passages(bad)


def test_empty_list_is_empty():
    assert to_passages([]) == []


def test_generator_input():
    ps = to_passages(t for t in ["a", "b"])
    assert [p.text for p in ps] == ["a", "b"]


def test_unicode_text():
    (p,) = to_passages(["Fièvre: 38,5 °C — 発熱 🤒"])
    assert p.text == "Fièvre: 38,5 °C — 発熱 🤒"


# ------------------------------------------------------------------ queries
def test_check_query():
    assert check_query(" fever ") == " fever "
    with pytest.raises(InvalidInputError, match="query is empty"):
        check_query("   ")
    with pytest.raises(InvalidInputError, match="must be a str"):
        check_query(None)


def test_check_queries():
    assert check_queries(["a", "b"]) == ["a", "b"]
    with pytest.raises(InvalidInputError, match="list of str"):
        check_queries("a")
    with pytest.raises(InvalidInputError, match=r"queries\[1\] is empty"):
        check_queries(["a", ""])
    with pytest.raises(InvalidInputError, match=r"queries\[0\] must be a str"):
        check_queries([1])


# ------------------------------------------------------------------ Ranking
def _ranking() -> Ranking:
    ps = to_passages(["a", "b", "c", "d"])
    return Ranking.from_scores(ps, [0.1, 0.9, 0.5, 0.5], query="q")


def test_from_scores_orders_descending_with_stable_ties():
    r = _ranking()
    assert r.ids == ["1", "2", "3", "0"]  # 0.5 tie: input order
    assert r.scores == [0.9, 0.5, 0.5, 0.1]
    assert [h.rank for h in r] == [1, 2, 3, 4]
    assert r[0].id == "1" and r[0].text == "b"
    assert r.query == "q"


def test_from_scores_k():
    r = Ranking.from_scores(to_passages(["a", "b", "c"]), [3, 2, 1], k=2)
    assert r.ids == ["0", "1"]


def test_top_k_and_slicing():
    r = _ranking()
    assert r.top_k(2).ids == ["1", "2"]
    assert r.top_k(0).ids == []
    assert r.top_k(99).ids == r.ids
    assert isinstance(r[1:3], Ranking) and r[1:3].ids == ["2", "3"]
    assert r.top_k(2).query == "q"
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(InvalidInputError, match="k must be a non-negative integer"):
            r.top_k(bad)  # type: ignore[arg-type]


def test_to_run_and_passages():
    r = _ranking()
    assert r.to_run() == {"1": 0.9, "2": 0.5, "3": 0.5, "0": 0.1}
    assert [p.text for p in r.passages] == ["b", "c", "d", "a"]
    assert len(r) == 4


def test_ranking_repr_truncates():
    ps = to_passages([f"t{i}" for i in range(8)])
    r = Ranking.from_scores(ps, list(range(8)))
    text = repr(r)
    assert text.startswith("Ranking(8 hits")
    assert "+3" in text  # 5 shown, 3 more
    assert "7:7.000" in text
    assert "0:0.000" not in text


def test_hit_repr():
    h = Hit(Passage("x" * 100, id="p"), 0.12345, 1)
    text = repr(h)
    assert "rank=1" in text and "score=0.1235" in text and "…" in text
