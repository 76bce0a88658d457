import pytest

from streamer.domain.output import OutputRejected, parse_summary

pytestmark = pytest.mark.unit


def test_summary_is_text_after_think_stripped():
    assert parse_summary("<think>\nhmm\n</think>\n\n Likes jazz. \n") == "Likes jazz."


@pytest.mark.parametrize(
    ("text", "finish", "code"),
    [
        ("<think>still thinking", None, "no_think_close"),
        ("<think>a</think>b</think>c", None, "multiple_think_close"),
        ("<think>a</think>   \n", None, "empty_summary"),
        ("<think>a</think>ok", "length", "truncated"),
        ("<think>a</think>x <think>y", None, "think_in_summary"),
    ],
)
def test_unusable_replies_are_rejected_with_a_code(text, finish, code):
    with pytest.raises(OutputRejected) as info:
        parse_summary(text, finish_reason=finish)
    assert info.value.code == code


def test_overlong_summary_rejected():
    with pytest.raises(OutputRejected, match="summary_too_long"):
        parse_summary("<think>a</think>" + "x" * 101, max_chars=100)
