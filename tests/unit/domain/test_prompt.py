"""The prompt must be byte-identical to what AlignXplore+ was trained on."""

import pytest

from streamer.domain.prompt import NOT_PROVIDED, SYSTEM_PROMPT, build_update_prompt
from streamer.domain.triples import Triple

pytestmark = pytest.mark.unit

# Written out by hand from the reference (shared docs, alignxplore-plus.md section 1).
EXPECTED_SYSTEM = (
    "You are an expert User Preference Analyst. Your sole task is to analyze a user's past "
    "preference summary (possibly not provided) and new interaction history and summarize the "
    "user preferences.\n"
    "\n"
    "The user's history will be provided as a sequence of triples, where each triple is "
    "`(QUERY, CHOSEN ITEM BY THE USER, REJECTED ITEM BY THE USER)`.\n"
    "\n"
    "Do not include any introductory phrases, greetings, or any other text outside of this "
    "specified structure."
)

INSTRUCTION = (
    "Analyze the past preference summary and the following user interaction history to "
    "summarize the comprehensive user preferences in concise language. If past preferences are "
    "provided, adjust the preferences by combining past preferences with those reflected in "
    "current behavior, removing conflicting parts, and integrating new insights. If no past "
    "preferences are provided, derive the final preferences solely from user behavior. The "
    "user's history will be provided as a sequence of triples, where each triple is `(QUERY, "
    "CHOSEN ITEM BY THE USER, REJECTED ITEM BY THE USER)`."
)
CLOSING = (
    "Now, given the above user's past prefernce summary and the interaction history, "
    "summarize the user preferences."
)

EXPECTED_FIRST_UPDATE = f"""{INSTRUCTION}
=====Past Preference Summary=====

Not Provided.

=====Interaction History=====
=====Triple 1=====

*QUERY:*
 Please recommend some news to me.
*****
*CHOSEN ITEM BY THE USER:*
Title: Local team wins title
Abstract: A recap of the final.
*****
*REJECTED ITEM BY THE USER:*
Title: Stock dip
Abstract: Markets fell.

=====END=====

{CLOSING}"""


def t(query, chosen, rejected, event_id="e"):
    return Triple(query, chosen, rejected, event_id)


def test_system_message_is_byte_exact():
    assert SYSTEM_PROMPT == EXPECTED_SYSTEM


def test_first_update_matches_worked_example_of_reference():
    prompt = build_update_prompt(
        None,
        [
            t(
                "Please recommend some news to me.",
                "Title: Local team wins title\nAbstract: A recap of the final.",
                "Title: Stock dip\nAbstract: Markets fell.",
            )
        ],
    )
    assert prompt.user == EXPECTED_FIRST_UPDATE
    assert prompt.system == EXPECTED_SYSTEM


def test_second_update_inserts_previous_summary_verbatim_and_renumbers_from_one():
    prompt = build_update_prompt(
        "Likes sports; dislikes finance.",
        [t("Q1", "A", "B", "e1"), t("Q2", "C", "No negative sample.", "e2")],
    )
    expected = (
        f"{INSTRUCTION}\n=====Past Preference Summary=====\n\nLikes sports; dislikes finance."
        "\n\n=====Interaction History=====\n"
        "=====Triple 1=====\n\n*QUERY:*\n Q1\n*****\n*CHOSEN ITEM BY THE USER:*\nA\n*****\n"
        "*REJECTED ITEM BY THE USER:*\nB\n\n"
        "=====Triple 2=====\n\n*QUERY:*\n Q2\n*****\n*CHOSEN ITEM BY THE USER:*\nC\n*****\n"
        "*REJECTED ITEM BY THE USER:*\nNo negative sample."
        f"\n\n=====END=====\n\n{CLOSING}"
    )
    assert prompt.user == expected


def test_empty_window_renders_nothing_between_markers():
    prompt = build_update_prompt(None, [])
    assert "=====Interaction History=====\n\n\n=====END=====" in prompt.user
    assert f"\n\n{NOT_PROVIDED}\n\n" in prompt.user


def test_blank_previous_summary_counts_as_not_provided():
    assert build_update_prompt("   \n", []).user == build_update_prompt(None, []).user


def test_trained_typo_and_spelling_are_kept():
    user = build_update_prompt(None, [t("q", "c", "r")]).user
    assert "past prefernce summary" in user
    assert "=====Triple 1=====" in user and "Tripe" not in user
    assert '"Not Provided."' not in user


def test_unicode_and_very_long_items_pass_through_untouched():
    chosen = "Title: Café 東京 🍜\nAbstract: " + "ü" * 50_000
    prompt = build_update_prompt("Ünïcödé summary", [t("¿Qué?", chosen, "Title: x\nAbstract: y")])
    assert chosen in prompt.user
    assert "\n ¿Qué?\n" in prompt.user


def test_qwen3_chat_text_has_generation_prompt_with_thinking_on():
    prompt = build_update_prompt(None, [])
    text = prompt.chat_text()
    assert text.startswith(f"<|im_start|>system\n{EXPECTED_SYSTEM}<|im_end|>\n<|im_start|>user\n")
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")  # nothing prefilled
    assert prompt.messages()[0]["role"] == "system" and len(prompt.messages()) == 2
