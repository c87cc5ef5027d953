"""One Messages API call with retries, returning the raw JSON of a well-formed response.

The SDK's own retries are off (`max_retries=0`) so that every retry, its reason and its
delay are ours: logged, visible in the transcript, and tunable (tests use tiny delays).
Retried: 408, 409, 429, 5xx (incl. 529 overloaded), timeouts, connection errors (a body
cut short included: the connection reset or closed before its `content-length` arrived)
and malformed responses (bad JSON, missing fields, usage that is no count). Other statuses
fail at once.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx2

from swarm_engine.agents.claude.settings import RetrySettings
from swarm_engine.agents.claude.usage import read_usage
from swarm_engine.jsonwire import top_level

RETRY_STATUSES = frozenset({408, 409, 429})
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
"""The most a response body may hold. A Messages API answer of the largest `max_tokens`
is well under 1 MiB; anything near this is no answer (an endpoint or proxy gone wrong),
so it fails the request at once, unretried, having read no more than this."""

RetryHook = Callable[[int, str, float], Awaitable[None]]
"""(attempt number that failed, reason, seconds until the next attempt)."""

UsageHook = Callable[[Mapping[str, Any]], None]
"""Called with the `usage` of a response that was then rejected as malformed."""


class ApiFailure(Exception):
    """The request failed for good (after retries, or not retryable)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class MalformedResponse(Exception):
    """A 200 that is no usable Messages API answer; `usage`: what it reported, when the
    answer could not be read as a whole (it is counted all the same)."""

    def __init__(self, message: str, usage: object = None) -> None:
        super().__init__(message)
        self.usage = usage


MAX_ANSWER_DEPTH = 128
"""An answer nested deeper than this (a tool's input of 5,000 levels) is malformed: the
agent's readers of it (the redactor, the transcript) walk it level by level."""
_USAGE = frozenset({"usage"})


def deeper_than(value: Any, levels: int) -> bool:
    """Whether `value` (parsed JSON) holds lists or objects more than `levels` deep; no
    recursion, and never looks past that depth."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= levels:
                return True
            inner = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in inner if isinstance(child, dict | list))
    return False


class BodyCut(Exception):
    """The connection broke (reset, closed, undecodable) while the body was being read."""


@dataclass(frozen=True)
class ApiResponse:
    data: dict[str, Any]
    attempts: int
    request_id: str | None


def make_client(api_key: str, base_url: str | None, timeout: float) -> anthropic.AsyncAnthropic:
    """An SDK client that reads nothing from the environment and never retries by itself."""
    return anthropic.AsyncAnthropic(
        api_key=api_key,
        base_url=base_url or "https://api.anthropic.com",
        max_retries=0,
        timeout=timeout,
    )


async def create_message(
    client: anthropic.AsyncAnthropic,
    body: Mapping[str, Any],
    retry: RetrySettings,
    *,
    request_timeout: float,
    on_retry: RetryHook | None = None,
    on_rejected_usage: UsageHook | None = None,
) -> ApiResponse:
    attempt = 0
    while True:
        attempt += 1
        retry_after: float | None = None
        try:
            # the whole request, its body included: the SDK's timeout bounds each read only,
            # so an endpoint sending a byte a second would never time out
            async with (
                asyncio.timeout(request_timeout),
                client.messages.with_streaming_response.create(
                    **body, timeout=request_timeout
                ) as raw,
            ):
                data = await _read_json(raw)
                request_id = raw.request_id
            validate_message(data, on_rejected_usage)
            assert isinstance(data, dict)
            return ApiResponse(data, attempt, request_id)
        except anthropic.APIStatusError as exc:
            status = exc.status_code
            reason = f"HTTP {status}: {_api_message(exc)}"
            if not (status in RETRY_STATUSES or status >= 500):
                raise ApiFailure(f"API request failed: {reason}", status) from None
            retry_after = _retry_after(exc.response.headers)
            failure = ApiFailure(f"API request failed after {attempt} attempts: {reason}", status)
        except (anthropic.APITimeoutError, TimeoutError, httpx2.TimeoutException):
            # (httpx2's own: a read of the body that timed out, after the SDK let go of it)
            reason = f"request timed out after {request_timeout:g}s"
            failure = ApiFailure(f"API request failed after {attempt} attempts: {reason}")
        except anthropic.APIConnectionError as exc:
            reason = f"connection error: {str(exc) or _said(exc)}"
            failure = ApiFailure(f"API request failed after {attempt} attempts: {reason}")
        except BodyCut as exc:
            reason = f"connection error: {exc}"
            failure = ApiFailure(f"API request failed after {attempt} attempts: {reason}")
        except (MalformedResponse, anthropic.APIResponseValidationError) as exc:
            if isinstance(exc, MalformedResponse) and isinstance(exc.usage, dict):
                # (an answer not read as a whole: its usage, read alone, is billed too)
                read = read_usage(exc.usage, required=("input_tokens", "output_tokens"))
                if read.problem is None and on_rejected_usage is not None:
                    on_rejected_usage(exc.usage)
            reason = f"malformed response: {exc}"
            failure = ApiFailure(f"API request failed after {attempt} attempts: {reason}")
        if attempt > retry.max_retries:
            raise failure
        delay = backoff(retry, attempt, retry_after)
        if on_retry is not None:
            await on_retry(attempt, reason, delay)
        await asyncio.sleep(delay)


async def _read_json(raw: Any) -> Any:
    """The JSON of a streamed response's body, read up to `MAX_RESPONSE_BYTES` (raises
    `ApiFailure` past it, `MalformedResponse` when it is not JSON)."""
    body = bytearray()
    try:
        async for chunk in raw.iter_bytes():
            body += chunk
            if len(body) > MAX_RESPONSE_BYTES:
                raise ApiFailure(
                    f"API request failed: the response is over {MAX_RESPONSE_BYTES // 2**20}"
                    " MiB (no Messages API answer is); not retried"
                )
    except httpx2.TimeoutException:
        raise
    except httpx2.RequestError as exc:  # the SDK wraps none of these once the body streams
        expected = raw.headers.get("content-length")
        of = f" of {expected}" if expected and expected.isdigit() else ""
        raise BodyCut(f"the response broke off after {len(body)}{of} bytes: {_said(exc)}") from None
    try:
        return json.loads(body)
    except RecursionError:  # billed all the same: its usage, read alone, is counted
        raise MalformedResponse(
            f"response is nested deeper than {MAX_ANSWER_DEPTH} levels",
            top_level(bytes(body), _USAGE).get("usage"),
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedResponse(f"response is not JSON: {exc}") from None


def backoff(retry: RetrySettings, attempt: int, retry_after: float | None = None) -> float:
    """Delay after failed attempt number `attempt` (1-based)."""
    if retry_after is not None and retry_after >= 0:
        return min(retry_after, retry.max_backoff_seconds)
    base = retry.backoff_seconds * retry.backoff_factor ** (attempt - 1)
    return min(base, retry.max_backoff_seconds) * (0.75 + 0.25 * random.random())


def validate_message(data: object, on_rejected_usage: UsageHook | None = None) -> None:
    """Raise `MalformedResponse` unless `data` is a usable Messages API response (its
    content nested at most `MAX_ANSWER_DEPTH` levels); the usage of a rejected one is
    handed to `on_rejected_usage`."""
    if not isinstance(data, dict):
        raise MalformedResponse("response body is not a JSON object")
    usage = data.get("usage")
    read = read_usage(usage, required=("input_tokens", "output_tokens"))
    usage_ok = read.problem is None
    try:
        if data.get("type", "message") != "message":
            raise MalformedResponse(f"unexpected response type {data.get('type')!r}")
        if not usage_ok:
            raise MalformedResponse(f"response has no valid usage ({read.problem})")
        content = data.get("content")
        if not isinstance(content, list):
            raise MalformedResponse("response has no content list")
        if deeper_than(content, MAX_ANSWER_DEPTH - 1):
            raise MalformedResponse(f"response is nested deeper than {MAX_ANSWER_DEPTH} levels")
        for block in content:
            _validate_block(block)
        stop = data.get("stop_reason")
        if stop is not None and not isinstance(stop, str):
            raise MalformedResponse("stop_reason is not a string")
    except MalformedResponse:
        if usage_ok and on_rejected_usage is not None:
            assert isinstance(usage, dict)
            on_rejected_usage(usage)
        raise


def _validate_block(block: object) -> None:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise MalformedResponse("content block without a type")
    kind = block["type"]
    if kind == "text" and not isinstance(block.get("text"), str):
        raise MalformedResponse("text block without text")
    if kind == "tool_use" and not (
        isinstance(block.get("id"), str)
        and block["id"]
        and isinstance(block.get("name"), str)
        and isinstance(block.get("input"), dict)
    ):
        raise MalformedResponse("tool_use block needs id, name and an input object")


def _said(exc: BaseException) -> str:
    """What an exception says, in one line and never empty: httpx2's ReadError on a reset
    says nothing, the OSError it was raised from does (`Connection reset by peer`)."""
    cause: BaseException | None = exc
    for _ in range(5):
        if cause is None:
            break
        text = " ".join(str(cause).split())
        if text:
            return f"{type(exc).__name__}: {text}"
        cause = cause.__cause__ or cause.__context__
    return type(exc).__name__


def _api_message(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            kind = err.get("type")
            return f"{kind}: {err['message']}" if isinstance(kind, str) else err["message"]
    return exc.message


def _retry_after(headers: Mapping[str, str]) -> float | None:
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return float(value) / scale
        except ValueError:
            continue
    return None
