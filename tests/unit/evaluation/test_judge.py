import math

from streamer.domain.judge import JudgeItem, parse_selection, prob_a
from streamer.evaluation.judge import roc_auc, stage_chunks


def test_judge_prompt_is_the_reference_layout():
    item = JudgeItem("Q?", "Likes jazz.", "Jazz night", "Metal fest", chosen_is_a=False)
    system, user = item.messages()
    assert system == {"role": "system", "content": "Generate a task-specific response."}
    assert user["content"] == (
        "Determine which response the user prefers based on the user's preferences. Please "
        "output your selection below in a json format by filling in the placeholders in []:"
        '{"selection": "[Item A / Item B]"}\n'
        "<Prompt>\nQ?\n</Prompt>\n\n<Preference>\nLikes jazz.</Preference>\n\n"
        "<Item A>\nMetal fest\n</Item A>\n\n<Item B>\nJazz night\n</Item B>\n\n"
        "Now, ONLY output your selection without any other text outside of this specified "
        "structure."
    )
    assert item.gold == "Item B"


def test_selection_parsing_follows_the_reference():
    assert parse_selection('{"selection": "Item A"}') == "Item A"
    assert parse_selection('<think>hm</think>\n```json\n{"selection": "Item B"}\n```') == "Item B"
    assert parse_selection("analysis...assistantfinal{\"selection\": \"Item A\"}") == "Item A"
    assert parse_selection("Item A") is None and parse_selection('{"selection": "C"}') is None


def test_letter_probability_and_auc():
    assert math.isclose(prob_a([[("{", 0.0)], [("A", math.log(0.8))]]), 0.8)
    assert math.isclose(prob_a([[("B", math.log(0.9))]]), 0.1)
    assert prob_a(None) == 0.5
    assert roc_auc([True, False, True, False], [0.9, 0.1, 0.8, 0.3]) == 1.0
    assert roc_auc([True, False], [0.5, 0.5]) == 0.5
    assert roc_auc([True, True], [0.1, 0.2]) is None


def test_stage_chunks_thirds_for_recommendation_sets_halves_otherwise():
    h = list(range(9))
    assert stage_chunks(h, "mind_test") == ([0, 1, 2], [3, 4, 5])
    assert stage_chunks(h, "alignx_test") == ([0, 1, 2, 3], [4, 5, 6, 7, 8])
