"""Tests for meteora.rationales.parsing: realistic outputs of many model families."""

from __future__ import annotations

import pytest

from meteora.errors import InvalidInputError
from meteora.rationales.parsing import normalize_for_dedupe, parse_rationales, strip_think


def test_xml_indexed_tags_with_labels_and_flags():
    text = (
        "<rationale_1>[Mechanism] Look for how mitochondria release cytochrome c. "
        "Flag Instructions: reject passages about animal cells only.</rationale_1>\n"
        "<rationale_2>[Population] Lace plant leaves at different developmental stages</rationale_2>\n"
        "<rationale_3>[Outcome] Perforation formation in the leaf blade. flag instructions - reject opinion pieces"
        "</rationale_3>"
    )
    p = parse_rationales(text)
    assert p.method == "xml"
    assert p.rationales == [
        "Mechanism: Look for how mitochondria release cytochrome c.",
        "Population: Lace plant leaves at different developmental stages",
        "Outcome: Perforation formation in the leaf blade.",
    ]
    assert p.flags == ["reject passages about animal cells only", None, "reject opinion pieces"]
    assert p.labels == ["Mechanism", "Population", "Outcome"]


def test_xml_plain_tags_and_unclosed_last_tag():
    text = "Sure!\n<rationale>Survival at one year</rationale>\n<rationale>Rates of wound infection after surgery"
    p = parse_rationales(text)
    assert p.method == "xml"
    assert p.rationales == ["Survival at one year", "Rates of wound infection after surgery"]
    assert p.labels == [None, None]


def test_xml_unclosed_middle_tag_stops_at_next_open_tag():
    text = "<rationale_1>Dose of aspirin <rationale_2>Bleeding risk</rationale_2>"
    assert parse_rationales(text).rationales == ["Dose of aspirin", "Bleeding risk"]


def test_xml_tag_variants_with_spaces_and_mismatched_numbers():
    text = "<rationale 1>Blood pressure change</rationale 1><Rationale_2>Heart rate</rationale_7>"
    assert parse_rationales(text).rationales == ["Blood pressure change", "Heart rate"]


def test_numbered_list_with_lead_in_and_trailing_commentary():
    text = (
        "Here are three rationales:\n\n"
        "1. Stroke rates in elderly patients taking aspirin.\n"
        "2) Bleeding complications of aspirin.\n"
        "(3) Length of follow-up.\n\n"
        "These will help you find the right passage."
    )
    p = parse_rationales(text)
    assert p.method == "numbered"
    assert p.rationales == [
        "Stroke rates in elderly patients taking aspirin.",
        "Bleeding complications of aspirin.",
        "Length of follow-up.",
    ]


def test_rationale_n_headings_and_markdown_bold():
    text = "**Rationale 1:** Look for dosage.\nRationale 2 - Look for safety data.\n**Evidence 3.** Mortality."
    p = parse_rationales(text)
    assert p.method == "numbered"
    assert p.rationales == ["Look for dosage.", "Look for safety data.", "Mortality."]


def test_numbered_items_with_bold_labels():
    text = "1. **Study design**: randomized trial\n2. **Population**: adults over 65"
    assert parse_rationales(text).rationales == [
        "Study design: randomized trial",
        "Population: adults over 65",
    ]


def test_bullets_and_indented_continuation_lines():
    text = "- Look for survival rates\n  after five years of follow-up\n* Look for recurrence\n• Look for cost"
    p = parse_rationales(text)
    assert p.method == "numbered"
    assert p.rationales == [
        "Look for survival rates after five years of follow-up",
        "Look for recurrence",
        "Look for cost",
    ]


def test_decimal_numbers_are_not_list_markers():
    text = "0.72 odds ratio for death\n3.5 mmHg change in blood pressure"
    p = parse_rationales(text)
    assert p.method == "lines"
    assert p.rationales == ["0.72 odds ratio for death", "3.5 mmHg change in blood pressure"]


def test_plain_lines_med_rationale_format():
    text = (
        "Look for lethargy, weight gain, and cold intolerance as common signs of hypothyroidism.\n"
        "Examine for dry skin, hair loss, and alopecia.\n\n"
        "Check for bradycardia and constipation.\n"
    )
    p = parse_rationales(text, n=3)
    assert p.method == "lines"
    assert len(p.rationales) == 3
    assert p.rationales[1] == "Examine for dry skin, hair loss, and alopecia."


def test_adapter_that_never_stops_keeps_first_n_lines_and_cuts_new_sections():
    text = "Look for A.\nLook for B.\nLook for C.\nLook for D.\n\n### Query:\nWhat about E?\n\n### Response:\nLook for E."
    p = parse_rationales(text, n=3)
    assert p.rationales == ["Look for A.", "Look for B.", "Look for C."]
    assert "Look for E." not in parse_rationales(text).rationales


def test_leaked_special_tokens_end_the_output():
    assert parse_rationales("Look for dosage.<|im_end|>\nuser: hi").rationales == [
        "Look for dosage."
    ]
    assert parse_rationales("Look for dosage.</s> garbage after").rationales == ["Look for dosage."]


def test_duplicates_are_dropped_case_and_space_insensitive():
    text = "1. Look for  Mortality.\n2. look for mortality\n3. LOOK FOR MORTALITY!\n4. Look for morbidity."
    p = parse_rationales(text)
    assert p.rationales == ["Look for  Mortality.".replace("  ", " "), "Look for morbidity."]


def test_n_limits_the_count_and_must_be_positive():
    text = "1. a b c\n2. d e f\n3. g h i"
    assert parse_rationales(text, n=2).rationales == ["a b c", "d e f"]
    with pytest.raises(InvalidInputError, match="positive integer"):
        parse_rationales(text, n=0)


def test_think_block_is_stripped_when_asked():
    text = "<think>The user asks about aspirin.\n1. Not this.\n</think>\n1. Bleeding events.\n2. Stroke rates."
    assert parse_rationales(text, strip_think=True).rationales == [
        "Bleeding events.",
        "Stroke rates.",
    ]
    assert "Not this." in parse_rationales(text, strip_think=False).rationales


def test_unclosed_think_block_means_nothing_usable():
    p = parse_rationales(
        "<think>Let me reason about the patients and the outcome", strip_think=True
    )
    assert p.method == "none" and p.rationales == []


def test_strip_think_variants():
    assert strip_think("<think>a</think>b<think>c</think>d") == "bd"
    assert strip_think("reasoning without the opening tag</think>answer") == "answer"
    assert strip_think("keep this <THINK>drop this") == "keep this "
    assert strip_think("no think at all") == "no think at all"


@pytest.mark.parametrize(
    "text", ["", "   \n\n  ", "...\n---\n!!!", "<rationale_1></rationale_1>", "***"]
)
def test_empty_or_garbage_gives_method_none(text):
    p = parse_rationales(text)
    assert p.method == "none"
    assert p.rationales == [] and p.flags == []


def test_lead_in_only_output_gives_none():
    assert (
        parse_rationales("The correct passage should contain the following evidence:").method
        == "none"
    )


def test_flags_on_plain_lines():
    p = parse_rationales("Look for dosage. Flag Instructions: reject veterinary doses")
    assert p.rationales == ["Look for dosage."]
    assert p.flags == ["reject veterinary doses"]


def test_rejects_non_string():
    with pytest.raises(InvalidInputError):
        parse_rationales(None)  # type: ignore[arg-type]


def test_normalize_for_dedupe():
    assert normalize_for_dedupe("  Look For\tdosage. ") == "look for dosage"
