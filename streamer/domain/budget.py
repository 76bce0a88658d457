"""Fit an update prompt into the model's context window (pure, no I/O).

vLLM rejects a request whose prompt tokens plus ``max_tokens`` exceed ``max_model_len`` (16384 for
AlignXplore+), so the budget for the prompt is ``context_tokens - output_tokens`` (12288 with the
reference's ``max_tokens=4096``).  The reference's ``truncate_history`` (shared docs,
alignxplore-plus.md section 3) only compares the prompt with ``max_model_len / 1.2`` and can loop
forever; this module keeps its rule (drop the oldest half, repeat) but counts the output too and
always terminates:

1. every item text (query, chosen, rejected) longer than ``max_item_tokens`` keeps its beginning
   and gets the marker :data:`TRUNCATION_MARKER`;
2. while the prompt does not fit and more than one triple is left, keep the most recent half
   (``len // 2``, as the reference);
3. if the last triple alone does not fit, cut its items harder (halve the item limit) until it fits
   or the limit would fall below :data:`MIN_ITEM_TOKENS`;
4. if it still does not fit and the previous summary is longer than ``max_summary_tokens``, cut the
   summary to that limit (with the marker) and run steps 2-3 again from the full window.

An overlong previous summary is otherwise only *reported* (``summary_too_long``), never cut: the
caller decides what to do with it.  When nothing fits, the result has ``fits=False`` and holds the
smallest prompt that was tried; the caller must not send it.

The number of rendered and counted prompts is at most ``2 * (log2(n) + 1 + item rounds)`` for
``n`` triples; every loop is bounded, whatever the counter returns.

The algorithm is written once, as a generator that yields the prompts it needs counted; the sync
(:func:`fit_prompt`) and async (:func:`fit_prompt_async`) entry points only drive it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from .prompt import Prompt, build_update_prompt
from .triples import Triple

__all__ = [
    "DEFAULT_CONTEXT_TOKENS",
    "DEFAULT_OUTPUT_TOKENS",
    "MIN_ITEM_TOKENS",
    "TRUNCATION_MARKER",
    "AsyncPromptCounter",
    "FitResult",
    "TokenCounter",
    "cut_text",
    "estimate_tokens",
    "fit_prompt",
    "fit_prompt_async",
]

DEFAULT_CONTEXT_TOKENS = 16384
"""vLLM ``max_model_len`` of the reference deployment (prompt + output)."""
DEFAULT_OUTPUT_TOKENS = 4096
"""The reference's ``max_tokens``: room the model needs for ``<think>...</think>`` + summary."""
MIN_ITEM_TOKENS = 16
"""Floor of the item limit when the last triple must be cut harder (step 3)."""
TRUNCATION_MARKER = " [...truncated]"
"""Appended to a text that was cut (without its leading space when nothing of the text is left)."""


class TokenCounter(Protocol):
    """Counts the tokens of a text (sync), e.g. :func:`estimate_tokens` or a real tokenizer."""

    def __call__(self, text: str) -> int: ...


AsyncPromptCounter = Callable[[Prompt], Awaitable[int]]
"""Counts the prompt tokens of a whole :class:`Prompt`, e.g. through vLLM's ``POST /tokenize``."""


@dataclass(frozen=True, slots=True)
class FitResult:
    """What :func:`fit_prompt` decided for one update."""

    prompt: Prompt
    """The prompt to send (only when ``fits``)."""
    kept: tuple[Triple, ...]
    """The triples in the prompt, most recent last, as sent (item texts possibly cut)."""
    dropped_event_ids: tuple[str, ...]
    """Events none of whose triples were kept, in window order."""
    truncated_event_ids: tuple[str, ...]
    """Events of kept triples with at least one item text cut, in window order."""
    prompt_tokens: int
    """Tokens of ``prompt.chat_text()`` as the counter measured them."""
    summary_too_long: bool
    """The previous summary is longer than ``max_summary_tokens`` (cut or not)."""
    fits: bool
    """``prompt_tokens + output_tokens <= context_tokens``."""
    summary_truncated: bool = False
    """The previous summary had to be cut for the prompt to fit (implies ``summary_too_long``)."""


# --------------------------------------------------------------------------- estimate

_SPECIAL_TOKENS = frozenset({"<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>"})
# Same segmentation as the stand-in tokenizer (streamer/standin/server.py), except that only the
# real Qwen3 special tokens are single pieces: every piece of the stand-in is covered by pieces of
# this one that cost at least as much, so the estimate is never below the stand-in's count.
_ESTIMATE_RE = re.compile(
    r"(?P<special><\|(?:im_start|im_end|endoftext)\|>|</?think>)"
    r"|(?P<word>[^\W\d_]+)"
    r"|(?P<digit>\d)"
    r"|(?P<newlines>\n+)"
    r"|(?P<blanks>[ \t]{2,})"
    r"|(?P<other>[^\w\s]|_|[^\S\n])"
)
_ASCII_WORD_CHARS_PER_TOKEN = 4
_IDENTIFIER_CHARS_PER_TOKEN = 2
_ASTRAL_CHAR_TOKENS = 3


def estimate_tokens(text: str) -> int:
    """A conservative offline estimate of the Qwen3 tokens of ``text`` (over- rather than under).

    Text is split like the stand-in tokenizer does, then each piece is priced from what Qwen3's
    byte-level BPE (151k vocabulary; its pre-tokenizer splits every digit apart) does with it:

    - ASCII letter run of length L: ``ceil(L / 4)``.  Qwen averages ~4 characters per token on
      English *including* spaces and punctuation, and nearly every common word is one token, so
      pricing each word by its own length rounded up (a 5-letter word costs 2) over-estimates
      English prose by ~1.2-1.3x while staying within 2x of the stand-in (which charges
      ``ceil(L / 6)``).  Identifier-like runs (touching a digit, or mixed case such as ``iPhone``
      or base64) split much finer in BPE and cost ``ceil(L / 2)``;
    - other letter runs (CJK, Cyrillic, accented Latin words): 1 per character; CJK is ~1-1.5
      characters per token, Cyrillic ~3, so this over-estimates; characters outside the BMP (rare
      CJK extensions) cost 3, since BPE falls back to byte pieces for them;
    - digit: 1 (Qwen tokenizes digits one by one); a single space before a digit or at the very
      end of the text: 1 (it does not merge into a digit);
    - run of newlines, run of 2+ blanks, ASCII punctuation character, ``_``: 1;
    - other non-ASCII symbol (emoji, CJK punctuation, ZWJ, ...): ``ceil(UTF-8 bytes / 2)``, 3 for
      a character outside the BMP (an emoji missing from the merges takes 2-3 byte tokens);
    - ``<|im_start|>``, ``<|im_end|>``, ``<|endoftext|>``, ``<think>``, ``</think>``: 1.

    The simpler ``max(bytes / 3, words * 1.6)`` was rejected: measured against the real Qwen3
    tokenizer it undercounts digits (0.35x), the prompt's ``=====``/``*****`` markers (0.5x of the
    stand-in) and URLs.  Measured against the Qwen3 ``tokenizer.json`` this is 1.1-1.3x on English
    prose, Markdown, code and the rendered update prompt, 1.15-2x on CJK, Japanese, Korean and
    emoji.  Known blind spot: random letter strings (base64, hashes, random IDs), which BPE splits
    into ~1.5-2.5-character pieces (measured 0.5-0.9x); ``/tokenize`` counts them exactly.
    """
    total = 0
    end = len(text)
    for match in _ESTIMATE_RE.finditer(text):
        kind = match.lastgroup
        piece = match.group(0)
        if kind == "word":
            total += _word_cost(text, match.start(), match.end(), piece)
        elif kind == "other":
            if piece == " " or piece == "\t":
                after = match.end()
                if after == end or text[after].isdecimal():
                    total += 1
            elif piece.isascii():
                total += 1
            else:
                total += _symbol_cost(piece)
        else:  # special, digit, newlines, blanks
            total += 1
    return total


def _word_cost(text: str, start: int, end: int, word: str) -> int:
    if not word.isascii():
        return sum(_ASTRAL_CHAR_TOKENS if ord(ch) > 0xFFFF else 1 for ch in word)
    identifier = (
        (start > 0 and text[start - 1].isdecimal())
        or (end < len(text) and text[end].isdecimal())
        or (len(word) > 1 and not (word[1:].islower() or word[1:].isupper()))
    )
    per_token = _IDENTIFIER_CHARS_PER_TOKEN if identifier else _ASCII_WORD_CHARS_PER_TOKEN
    return -(-len(word) // per_token)


def _symbol_cost(ch: str) -> int:
    if ord(ch) > 0xFFFF:
        return _ASTRAL_CHAR_TOKENS
    return -(-len(ch.encode("utf-8", "surrogatepass")) // 2)


# --------------------------------------------------------------------------- cutting text


def _is_extender(ch: str) -> bool:
    """A character that belongs to the grapheme of the character before it."""
    code = ord(ch)
    return (
        unicodedata.combining(ch) != 0
        or unicodedata.category(ch) in ("Mn", "Me", "Mc")
        or code == 0x200D  # zero width joiner
        or 0xFE00 <= code <= 0xFE0F  # variation selectors
        or 0xE0100 <= code <= 0xE01EF
        or 0x1F3FB <= code <= 0x1F3FF  # emoji skin tone modifiers
        or 0xE0020 <= code <= 0xE007F  # emoji tag sequences
        or 0xDC00 <= code <= 0xDFFF  # low surrogate (of a lone pair in a surrogateescape str)
        or 0x1160 <= code <= 0x11FF  # Hangul medial vowel / final consonant jamo
    )


def _is_regional_indicator(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


def _safe_cut(text: str, k: int) -> int:
    """The largest cut position ``<= k`` that does not split a character sequence."""
    while 0 < k < len(text):
        before, at = text[k - 1], text[k]
        if _is_extender(at) or ord(before) == 0x200D or 0xD800 <= ord(before) <= 0xDBFF:
            k -= 1
        elif before == "\r" and at == "\n":
            k -= 1
        elif _is_regional_indicator(before) and _is_regional_indicator(at):
            run = 0
            while run < k and _is_regional_indicator(text[k - 1 - run]):
                run += 1
            if run % 2 == 0:
                return k  # between two flags
            k -= 1
        else:
            return k
    return max(k, 0)


def _with_marker(text: str, k: int) -> str:
    prefix = text[:k].rstrip()
    return prefix + TRUNCATION_MARKER if prefix else TRUNCATION_MARKER.lstrip()


def cut_text(text: str, max_tokens: int, count: TokenCounter) -> str:
    """``text`` if it has at most ``max_tokens`` tokens, else its longest beginning that, with
    :data:`TRUNCATION_MARKER` appended, has at most ``max_tokens`` tokens.

    Deterministic; never splits a surrogate pair, a combining sequence, an emoji ZWJ/modifier
    sequence, a flag or ``\\r\\n`` (it backs off to the start of that sequence).  Binary search on
    the cut position (galloping from the start): ``O(log len(text))`` calls of ``count`` on
    prefixes at most twice as long as the result.  When even the bare marker is over
    the limit, the result is the bare marker ``[...truncated]`` (the floor).
    """
    if count(text) <= max_tokens:
        return text
    return _cut_long(text, max_tokens, count)


_GALLOP_START = 64


def _cut_long(text: str, max_tokens: int, count: TokenCounter) -> str:
    """:func:`cut_text` for a text already known to be over ``max_tokens``."""

    def fits(k: int) -> bool:
        return count(_with_marker(text, _safe_cut(text, k))) <= max_tokens

    # Largest cut position whose result fits; position 0 (bare marker) is the floor.  Gallop from
    # the start first, so that cutting a huge text to a small limit only counts short prefixes.
    lo, hi = 0, len(text) - 1
    probe = _GALLOP_START
    while probe <= hi:
        if not fits(probe):
            hi = probe - 1
            break
        lo, probe = probe, probe * 2
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return _with_marker(text, _safe_cut(text, lo))


# --------------------------------------------------------------------------- fitting


@dataclass(frozen=True, slots=True)
class _Attempt:
    prompt: Prompt
    kept: tuple[Triple, ...]
    tokens: int
    fits: bool


class _Cutter:
    """Item and summary cuts, memoised by (text, limit): windows repeat queries and items."""

    def __init__(self, count: TokenCounter) -> None:
        self._count = count
        self._cuts: dict[tuple[str, int], str] = {}
        self._lengths: dict[str, int] = {}

    def length(self, text: str) -> int:
        n = self._lengths.get(text)
        if n is None:
            n = self._lengths[text] = int(self._count(text))
        return n

    def cut(self, text: str, limit: int) -> str:
        if self.length(text) <= limit:
            return text
        key = (text, limit)
        out = self._cuts.get(key)
        if out is None:
            out = self._cuts[key] = _cut_long(text, limit, self._count)
        return out

    def triple(self, t: Triple, limit: int) -> Triple:
        query, chosen, rejected = (self.cut(s, limit) for s in (t.query, t.chosen, t.rejected))
        if (query, chosen, rejected) == (t.query, t.chosen, t.rejected):
            return t
        return replace(t, query=query, chosen=chosen, rejected=rejected)


# The generator yields a Prompt to be counted and receives its token count.
_Steps = Generator[Prompt, int, "_Attempt"]


def _fit_window(
    summary: str | None,
    triples: Sequence[Triple],
    *,
    cutter: _Cutter,
    budget: int,
    max_item_tokens: int,
) -> _Steps:
    """Steps 1-3 for one summary text."""

    def attempt(kept: tuple[Triple, ...]) -> _Steps:
        prompt = build_update_prompt(summary, kept)
        tokens = int((yield prompt))
        return _Attempt(prompt, kept, tokens, tokens <= budget)

    kept = tuple(cutter.triple(t, max_item_tokens) for t in triples)
    result = yield from attempt(kept)
    while not result.fits and len(kept) > 1:
        kept = kept[-(len(kept) // 2) :]
        result = yield from attempt(kept)
    if result.fits or not kept:
        return result
    last = triples[-1]
    limit = max_item_tokens // 2
    while limit >= MIN_ITEM_TOKENS:
        smaller = (cutter.triple(last, limit),)
        if smaller != kept:
            kept = smaller
            result = yield from attempt(kept)
            if result.fits:
                break
        limit //= 2
    return result


def _fit(
    previous_summary: str | None,
    triples: Sequence[Triple],
    *,
    item_count: TokenCounter,
    context_tokens: int,
    output_tokens: int,
    max_item_tokens: int | None,
    max_summary_tokens: int | None,
) -> Generator[Prompt, int, FitResult]:
    if context_tokens <= 0 or output_tokens < 0:
        raise ValueError("context_tokens must be > 0 and output_tokens >= 0")
    budget = context_tokens - output_tokens
    item_limit = max(1, budget // 4) if max_item_tokens is None else max_item_tokens
    summary_limit = max(1, budget // 4) if max_summary_tokens is None else max_summary_tokens
    if item_limit < 1 or summary_limit < 1:
        raise ValueError("max_item_tokens and max_summary_tokens must be >= 1")
    triples = tuple(triples)
    cutter = _Cutter(item_count)

    summary = previous_summary.strip() if previous_summary and previous_summary.strip() else None
    summary_too_long = summary is not None and cutter.length(summary) > summary_limit

    def window(summary_text: str | None) -> _Steps:
        return _fit_window(summary_text, triples, cutter=cutter, budget=budget, max_item_tokens=item_limit)

    result = yield from window(summary)
    summary_truncated = False
    if not result.fits and summary is not None and summary_too_long:
        summary_truncated = True
        result = yield from window(cutter.cut(summary, summary_limit))

    kept_ids = {t.event_id for t in result.kept}
    # kept is a suffix of the window (cut or not): compare each with its original by position.
    originals = triples[len(triples) - len(result.kept) :]
    cut_ids = {t.event_id for t, o in zip(result.kept, originals, strict=True) if t is not o}
    return FitResult(
        prompt=result.prompt,
        kept=result.kept,
        dropped_event_ids=_unique(t.event_id for t in triples if t.event_id not in kept_ids),
        truncated_event_ids=_unique(t.event_id for t in result.kept if t.event_id in cut_ids),
        prompt_tokens=result.tokens,
        summary_too_long=summary_too_long,
        fits=result.fits,
        summary_truncated=summary_truncated,
    )


def _unique(ids: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(ids))


def fit_prompt(
    previous_summary: str | None,
    triples: Sequence[Triple],
    *,
    count: TokenCounter,
    context_tokens: int = DEFAULT_CONTEXT_TOKENS,
    output_tokens: int = DEFAULT_OUTPUT_TOKENS,
    max_item_tokens: int | None = None,
    max_summary_tokens: int | None = None,
    item_count: TokenCounter | None = None,
) -> FitResult:
    """Build the update prompt for ``triples`` (oldest first) so that it fits the context window.

    ``count`` measures ``prompt.chat_text()`` (and, unless ``item_count`` is given, the item and
    summary texts).  ``max_item_tokens`` and ``max_summary_tokens`` default to a quarter of the
    prompt budget ``context_tokens - output_tokens``.  See the module docstring for the rules.
    """
    steps = _fit(
        previous_summary,
        triples,
        item_count=count if item_count is None else item_count,
        context_tokens=context_tokens,
        output_tokens=output_tokens,
        max_item_tokens=max_item_tokens,
        max_summary_tokens=max_summary_tokens,
    )
    try:
        prompt = next(steps)
        while True:
            prompt = steps.send(count(prompt.chat_text()))
    except StopIteration as done:
        return done.value


async def fit_prompt_async(
    previous_summary: str | None,
    triples: Sequence[Triple],
    *,
    count: AsyncPromptCounter,
    context_tokens: int = DEFAULT_CONTEXT_TOKENS,
    output_tokens: int = DEFAULT_OUTPUT_TOKENS,
    max_item_tokens: int | None = None,
    max_summary_tokens: int | None = None,
    item_count: TokenCounter = estimate_tokens,
) -> FitResult:
    """:func:`fit_prompt` with an async whole-prompt counter (e.g. vLLM ``/tokenize``).

    Only whole prompts are awaited (``O(log n)`` calls); item and summary lengths, which only decide
    where texts are cut, use the sync ``item_count`` (default :func:`estimate_tokens`).  With
    ``count(p) == c(p.chat_text())`` and ``item_count == c`` the result equals
    ``fit_prompt(..., count=c)``.
    """
    steps = _fit(
        previous_summary,
        triples,
        item_count=item_count,
        context_tokens=context_tokens,
        output_tokens=output_tokens,
        max_item_tokens=max_item_tokens,
        max_summary_tokens=max_summary_tokens,
    )
    try:
        prompt = next(steps)
        while True:
            prompt = steps.send(await count(prompt))
    except StopIteration as done:
        return done.value
