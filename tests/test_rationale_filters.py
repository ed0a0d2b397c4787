"""Tests for meteora.rationales.filters: what makes a weak generator safe."""

from __future__ import annotations

import pytest

from meteora.errors import InvalidInputError
from meteora.rationales.filters import DROP_REASONS, content_tokens, filter_rationales
from meteora.rationales.templates import PromptTemplate, get_template

QUERY = "Do mitochondria play a role in remodelling lace plant leaves during programmed cell death?"


def reasons(dropped):
    return [r for _, r in dropped]


def test_echo_of_the_med_rationale_instruction_is_dropped():
    lines = [
        "The correct passage should contain the following evidence:",
        "Generate 3 concise rationales describing what evidence a correct passage should contain.",
        "Concise rationales describing evidence a passage should contain.",
        "Cytochrome c release from mitochondria in perforating leaf cells.",
    ]
    kept, dropped = filter_rationales(QUERY, lines, template="med-rationale")
    assert kept == ["Cytochrome c release from mitochondria in perforating leaf cells."]
    assert reasons(dropped) == ["echoes-instruction"] * 3


def test_generic_meta_lines_are_dropped_without_a_template():
    kept, dropped = filter_rationales(
        QUERY, ["Here are the rationales you asked for.", "Rationales:"]
    )
    assert kept == []
    assert set(reasons(dropped)) <= {"echoes-instruction", "too-short"}
    assert "echoes-instruction" in reasons(dropped)


def test_restating_the_query_is_dropped():
    lines = [
        QUERY,
        "Mitochondria play a role in remodelling lace plant leaves during programmed cell death.",
        "Look for evidence on whether mitochondria play a role in remodelling of lace plant leaves.",
        "Mitochondrial permeability transition and cytochrome c in lace plant cells.",
    ]
    kept, dropped = filter_rationales(QUERY, lines)
    assert kept == ["Mitochondrial permeability transition and cytochrome c in lace plant cells."]
    assert reasons(dropped) == ["restates-query"] * 3


def test_restatement_threshold_is_a_parameter():
    line = "Mitochondria in lace plant leaves during programmed cell death under stress."
    assert filter_rationales(QUERY, [line], max_query_overlap=0.9)[0] == [line]
    assert filter_rationales(QUERY, [line], max_query_overlap=0.5)[1] == [(line, "restates-query")]


def test_answers_are_dropped():
    lines = [
        "Yes, mitochondria play a key role.",
        "No.",
        "The answer to this question is no.",
        "In conclusion, mitochondria are involved.",
        "Therefore the evidence supports it.",
        "Nonsense-mediated decay in dying cells.",
    ]
    kept, dropped = filter_rationales(QUERY, lines, min_words=1)
    assert kept == ["Nonsense-mediated decay in dying cells."]
    assert reasons(dropped) == ["answers-query"] * 5


def test_answers_can_be_kept_when_asked():
    kept, _ = filter_rationales(QUERY, ["Yes, cytochrome c is released early."], drop_answers=False)
    assert kept == ["Yes, cytochrome c is released early."]


def test_near_duplicates_keep_the_first():
    lines = [
        "Cytochrome c release in perforating leaf cells.",
        "Cytochrome c release in the perforating leaf cells!",
        "Caspase-like protease activity in leaf windows.",
    ]
    kept, dropped = filter_rationales(QUERY, lines)
    assert kept == [lines[0], lines[2]]
    assert dropped == [(lines[1], "near-duplicate")]


def test_near_duplicates_ignore_template_labels():
    t = PromptTemplate(
        name="t",
        instruction="List evidence.",
        examples=(("q", "1. Patients: elderly adults.\n2. Exposure: smoking."),),
        response_prefix="1. Patients:",
    )
    lines = [
        "Patients: families with a history of chronic conditions.",
        "Exposure: families with a history of chronic conditions.",
    ]
    kept, dropped = filter_rationales(
        "Does prompting providers about family history work?", lines, template=t
    )
    assert kept == [lines[0]]
    assert reasons(dropped) == ["near-duplicate"]


def test_copied_few_shot_example_is_an_echo():
    t = get_template("chat")
    query = "Did Chile's traffic law reform push police enforcement?"
    lines = [
        "Patients: children with suspected appendicitis.",
        "Test: ultrasound compared with surgery or CT findings.",
        "Outcome: number of traffic fines issued by police before and after the reform.",
    ]
    kept, dropped = filter_rationales(query, lines, template=t)
    assert kept == [lines[2]]
    assert reasons(dropped) == ["echoes-instruction", "echoes-instruction"]


def test_label_only_line_is_not_a_rationale():
    kept, dropped = filter_rationales(
        QUERY, ["Patients: evidence information details"], template="chat"
    )
    assert kept == [] and reasons(dropped) == ["echoes-instruction"]


def test_too_short_and_garbage():
    lines = [
        "2",
        "Mortality",
        "!!! ### @@@ %%% ^^^",
        "the the the the the the the the",
        "x1 y2 z3 q4 w5 e6",
    ]
    kept, dropped = filter_rationales(QUERY, lines)
    assert kept == []
    assert reasons(dropped) == ["too-short", "too-short", "garbage", "garbage", "garbage"]


def test_on_topic_distinct_rationales_survive():
    lines = [
        "Timing of mitochondrial changes relative to vacuolar collapse.",
        "Microscopy of leaf windows at several developmental stages.",
        "Cytochrome c and caspase-like activity in dying cells.",
    ]
    kept, dropped = filter_rationales(QUERY, lines, template="med-rationale")
    assert kept == lines and dropped == []


def test_every_reason_is_documented():
    _, dropped = filter_rationales(
        QUERY,
        [
            "ok",
            "!!! ### @@@ ^^^",
            "Here are three rationales:",
            "Yes, they do play a role.",
            QUERY,
            "Caspase activity in dying leaf cells.",
            "Caspase activity in the dying leaf cells.",
        ],
    )
    assert {r for _, r in dropped} == set(DROP_REASONS)


def test_argument_validation():
    with pytest.raises(InvalidInputError, match="list of strings"):
        filter_rationales(QUERY, "one string")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="max_query_overlap"):
        filter_rationales(QUERY, [], max_query_overlap=0)
    with pytest.raises(InvalidInputError, match="near_duplicate"):
        filter_rationales(QUERY, [], near_duplicate=1.5)
    with pytest.raises(InvalidInputError, match="min_words"):
        filter_rationales(QUERY, [], min_words=-1)
    with pytest.raises(InvalidInputError, match="string"):
        filter_rationales(QUERY, [None])  # type: ignore[list-item]


def test_content_tokens_stem_and_drop_function_words():
    assert content_tokens("The studies of Dogs and CATS") == ["study", "dog", "cat"]


def test_settled_findings_count_as_answers():
    query = "Did Chile's traffic law reform push police enforcement?"
    lines = [
        "Patients: Chile's traffic law reform did not have a significant impact on police enforcement.",
        "Outcome: no impact on police enforcement.",
        "There was no significant difference in traffic deaths.",
        "Outcome: number of traffic tickets issued per month before and after the reform.",
        "Outcome: no-show rates of drivers at traffic court hearings.",
    ]
    kept, dropped = filter_rationales(query, lines, template="chat")
    assert kept == lines[3:]
    assert reasons(dropped) == ["answers-query"] * 3


def test_a_rationale_that_only_adds_a_label_is_a_near_duplicate():
    lines = [
        "Test: increased risk of cancer in relatives.",
        "Potential link: increased risk of cancer in relatives.",
    ]
    kept, dropped = filter_rationales(
        "Does prompting providers about family history work?", lines, template="chat"
    )
    assert kept == [lines[0]] and reasons(dropped) == ["near-duplicate"]
