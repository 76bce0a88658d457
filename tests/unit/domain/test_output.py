import pytest

from streamer.domain.output import OutputRejected, parse_summary

pytestmark = pytest.mark.unit


def test_summary_is_text_after_think_stripped():
    assert parse_summary("<think>\nhmm\n</think>\n\n Likes jazz. \n") == "Likes jazz."


@pytest.mark.parametrize(
    ("text", "finish", "code"),
    [
        ("<think>still thinking", "stop", "no_think_close"),
        ("<think>a</think>b</think>c", "stop", "multiple_think_close"),
        ("<think>a</think>   \n", "stop", "empty_summary"),
        ("<think>a</think>ok", "length", "truncated"),
        ("<think>a</think>ok", "abort", "not_stopped"),
        ("<think>a</think>ok", None, "not_stopped"),
        ("<think>a</think>x <think>y", "stop", "think_in_summary"),
    ],
)
def test_unusable_replies_are_rejected_with_a_code(text, finish, code):
    with pytest.raises(OutputRejected) as info:
        parse_summary(text, finish_reason=finish)
    assert info.value.code == code


def test_overlong_summary_rejected():
    with pytest.raises(OutputRejected, match="summary_too_long"):
        parse_summary("<think>a</think>" + "x" * 101, max_chars=100)


def test_thinking_split_out_by_the_server():
    assert parse_summary("\n\n Likes jazz.", reasoning="hmm") == "Likes jazz."
    assert parse_summary("</think>\n\nLikes jazz.", reasoning="hmm") == "Likes jazz."  # leftover
    for text, code in [("", "empty_summary"), ("a</think>b", "multiple_think_close"),
                       ("x <think>y", "think_in_summary")]:
        with pytest.raises(OutputRejected) as info:
            parse_summary(text, reasoning="hmm")
        assert info.value.code == code


def test_no_thinking_at_all_is_refused_unless_optional():
    with pytest.raises(OutputRejected, match="no_think_close"):
        parse_summary("Likes jazz.")
    assert parse_summary(" Likes jazz. ", thinking="optional") == "Likes jazz."
    with pytest.raises(OutputRejected, match="no_think_close"):
        parse_summary("<think>never closed", thinking="optional")
    with pytest.raises(OutputRejected, match="truncated"):
        parse_summary("Likes", thinking="optional", finish_reason="length")
