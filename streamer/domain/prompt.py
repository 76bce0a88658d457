"""Render the AlignXplore+ streaming-update prompt, byte for byte as the model was trained.

Reference: the SFT / streaming-eval template (``Triple`` spelling, "comprehensive ... in concise
language", the trained typo ``prefernce``), one system and one user message, Qwen3 chat
template with thinking on (nothing prefilled after ``assistant\\n``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .safety import neutralize
from .triples import Triple

SYSTEM_PROMPT = (
    "You are an expert User Preference Analyst. Your sole task is to analyze a user's past "
    "preference summary (possibly not provided) and new interaction history and summarize the "
    "user preferences.\n\nThe user's history will be provided as a sequence of triples, where "
    "each triple is `(QUERY, CHOSEN ITEM BY THE USER, REJECTED ITEM BY THE USER)`.\n\nDo not "
    "include any introductory phrases, greetings, or any other text outside of this specified "
    "structure."
)

USER_TEMPLATE = (
    "Analyze the past preference summary and the following user interaction history to "
    "summarize the comprehensive user preferences in concise language. If past preferences are "
    "provided, adjust the preferences by combining past preferences with those reflected in "
    "current behavior, removing conflicting parts, and integrating new insights. If no past "
    "preferences are provided, derive the final preferences solely from user behavior. The "
    "user's history will be provided as a sequence of triples, where each triple is `(QUERY, "
    "CHOSEN ITEM BY THE USER, REJECTED ITEM BY THE USER)`.\n=====Past Preference Summary====="
    "\n\n{past}\n\n=====Interaction History=====\n{triples}\n\n=====END=====\n\nNow, given the "
    "above user's past prefernce summary and the interaction history, summarize the user "
    "preferences."
)

NOT_PROVIDED = "Not Provided."

TRIPLE_TEMPLATE = (
    "=====Triple {i}=====\n\n*QUERY:*\n {query}\n*****\n*CHOSEN ITEM BY THE USER:*\n{chosen}"
    "\n*****\n*REJECTED ITEM BY THE USER:*\n{rejected}"
)


@dataclass(frozen=True, slots=True)
class Prompt:
    """The two chat messages of one update call."""

    system: str
    user: str

    def messages(self) -> list[dict[str, str]]:
        """OpenAI-style chat messages."""
        return [
            {"role": "system", "content": self.system},
            {"role": "user", "content": self.user},
        ]

    def chat_text(self) -> str:
        """The prompt as the Qwen3 chat template renders it (generation prompt, thinking on)."""
        return (
            f"<|im_start|>system\n{self.system}<|im_end|>\n"
            f"<|im_start|>user\n{self.user}<|im_end|>\n<|im_start|>assistant\n"
        )


def render_triples(triples: Sequence[Triple]) -> str:
    """Number triples from 1 and join them with one blank line (their text made inert:
    :func:`~streamer.domain.safety.neutralize`)."""
    return "\n\n".join(
        TRIPLE_TEMPLATE.format(i=i, query=neutralize(t.query), chosen=neutralize(t.chosen),
                               rejected=neutralize(t.rejected))
        for i, t in enumerate(triples, start=1)
    )


def build_update_prompt(previous_summary: str | None, triples: Sequence[Triple]) -> Prompt:
    """Build the streaming-update prompt for a previous summary (or none) and new triples.

    All text from outside (the previous summary, item text, queries) is neutralized: it can
    never act as a chat-template control token (:mod:`streamer.domain.safety`)."""
    past = neutralize(previous_summary).strip() if previous_summary else None
    user = USER_TEMPLATE.format(past=past or NOT_PROVIDED, triples=render_triples(triples))
    return Prompt(system=SYSTEM_PROMPT, user=user.strip())
