"""OpenAI-compatible chat-completions client for a pool of vLLM servers.

One request per update, sampling as the reference (temperature 0.6, top_p 0.95, top_k 20,
max_tokens 4096).  The least-busy endpoint is chosen for each attempt and a failed attempt
(timeout, connection error, 429, 5xx) is retried on another endpoint.  Errors are mapped at this
boundary: :class:`ModelUnavailableError` (transient) and :class:`ModelRequestError` (permanent).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from ...errors import ModelRequestError, ModelUnavailableError
from ...ports import ModelReply, UpdateRequest
from ...settings import ModelSettings

log = logging.getLogger(__name__)

RETRIABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


@dataclass
class _Endpoint:
    base_url: str
    outstanding: int = 0
    failures: int = 0


class OpenAICompatSummaryModel:
    """A :class:`~streamer.ports.SummaryModel` over one or more OpenAI-compatible endpoints."""

    def __init__(
        self,
        base_urls: Sequence[str],
        *,
        model: str,
        api_key: str = "EMPTY",
        timeout_s: float = 300.0,
        max_retries: int = 2,
        sampling: dict[str, float | int] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not base_urls:
            raise ValueError("at least one model endpoint is required")
        self.name = model
        self.model = model
        self.max_retries = max_retries
        self.sampling = sampling or {
            "temperature": 0.6,
            "top_p": 0.95,
            "top_k": 20,
            "max_tokens": 4096,
        }
        self._endpoints = [_Endpoint(u.rstrip("/")) for u in base_urls]
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            headers={"Authorization": f"Bearer {api_key}"},
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            transport=transport,
        )

    @classmethod
    def from_settings(cls, settings: ModelSettings) -> OpenAICompatSummaryModel:
        return cls(
            settings.base_urls,
            model=settings.model,
            api_key=settings.api_key.get_secret_value(),
            timeout_s=settings.timeout_s,
            max_retries=settings.max_retries,
            sampling={
                "temperature": settings.temperature,
                "top_p": settings.top_p,
                "top_k": settings.top_k,
                "max_tokens": settings.max_tokens,
            },
        )

    def _pick(self, exclude: set[str]) -> _Endpoint:
        candidates = [e for e in self._endpoints if e.base_url not in exclude] or self._endpoints
        return min(candidates, key=lambda e: (e.outstanding, e.failures))

    def request_body(self, request: UpdateRequest) -> dict[str, object]:
        """The chat-completions body: two messages, reference sampling, thinking left on."""
        return {"model": self.model, "messages": request.prompt.messages(), "n": 1, **self.sampling}

    async def generate(self, request: UpdateRequest) -> ModelReply:
        body = self.request_body(request)
        tried: set[str] = set()
        last_error: Exception | None = None
        for attempt in range(self.max_retries + 1):
            endpoint = self._pick(tried)
            tried.add(endpoint.base_url)
            try:
                return await self._call(endpoint, body)
            except ModelUnavailableError as exc:
                last_error = exc
                log.warning("model endpoint %s failed (%s), attempt %d", endpoint.base_url, exc,
                            attempt + 1)
                if attempt < self.max_retries:
                    await asyncio.sleep(min(0.2 * 2**attempt, 2.0))
        raise ModelUnavailableError(f"all attempts failed: {last_error}") from last_error

    async def _call(self, endpoint: _Endpoint, body: dict[str, object]) -> ModelReply:
        endpoint.outstanding += 1
        started = time.perf_counter()
        try:
            resp = await self._client.post(f"{endpoint.base_url}/chat/completions", json=body)
        except httpx.TimeoutException as exc:
            endpoint.failures += 1
            raise ModelUnavailableError(f"timeout calling {endpoint.base_url}") from exc
        except httpx.TransportError as exc:
            endpoint.failures += 1
            raise ModelUnavailableError(f"cannot reach {endpoint.base_url}: {exc!r}") from exc
        finally:
            endpoint.outstanding -= 1
        latency_ms = (time.perf_counter() - started) * 1000
        if resp.status_code in RETRIABLE_STATUS:
            endpoint.failures += 1
            raise ModelUnavailableError(f"{endpoint.base_url} answered {resp.status_code}")
        if resp.status_code >= 400:
            raise ModelRequestError(f"{endpoint.base_url} refused the request "
                                    f"({resp.status_code}): {resp.text[:300]}")
        endpoint.failures = 0
        try:
            data = resp.json()
            choice = data["choices"][0]
            usage = data.get("usage") or {}
            return ModelReply(
                text=choice["message"]["content"] or "",
                model=data.get("model", self.model),
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                completion_tokens=int(usage.get("completion_tokens", 0)),
                finish_reason=choice.get("finish_reason"),
                latency_ms=latency_ms,
            )
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ModelUnavailableError(f"malformed response from {endpoint.base_url}") from exc

    async def aclose(self) -> None:
        await self._client.aclose()
