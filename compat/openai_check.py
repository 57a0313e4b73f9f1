#!/usr/bin/env python3
"""Does the gateway work for OpenAI's own Python client, unchanged?

Run by `cargo xtask compat` (which makes a venv with a pinned `openai` and starts mock-llm and
the gateway in both modes), or by hand against a running gateway whose upstream is mock-llm:

    python compat/openai_check.py --gateway http://127.0.0.1:8000 --api-key KEY

`--checks cache` runs the response cache's checks instead, against a gateway started with
`--cache-mode all`: a cached answer replayed as a stream must be one the SDK reads like any
other (its deltas, its finish, its usage, and its own stream helper's final completion).

Each check prints `ok:` or `FAILED:`; the last line is `N passed, N failed`, and the exit code is
1 when anything failed. The checks use only the SDK's public API, the way an application would:
if one fails, a real client would break in the same place.
"""

import argparse
import sys
import time
import traceback

import openai
from openai import OpenAI

MODEL = "gpt-4o"
MESSAGES = [{"role": "user", "content": "Say hello"}]


def check_models(client, _args):
    ids = [model.id for model in client.models.list()]
    assert ids, "no models listed"
    assert "mock-1" in ids, f"expected mock-llm's mock-1 in {ids}"


def check_non_streaming(client, _args):
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    choice = completion.choices[0]
    assert choice.message.role == "assistant", choice
    assert choice.message.content, f"empty content: {completion}"
    assert choice.finish_reason == "stop", choice.finish_reason
    assert completion.usage and completion.usage.total_tokens > 0, completion.usage


def check_streaming(client, _args):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage, chunks = [], None, None, 0
    for chunk in stream:  # ends on `data: [DONE]`
        chunks += 1
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    text = "".join(pieces)
    assert len(pieces) > 1, f"expected several deltas, got {pieces}"
    assert text.strip(), "empty streamed text"
    assert finish == "stop", f"finish_reason {finish!r} after {chunks} chunks"
    assert usage and usage.completion_tokens == len(pieces), (usage, len(pieces))


def check_wrong_key(_client, args):
    wrong = OpenAI(base_url=args.base_url, api_key="not-the-key", max_retries=0, timeout=30)
    try:
        wrong.chat.completions.create(model=MODEL, messages=MESSAGES)
    except openai.AuthenticationError as error:
        assert error.status_code == 401, error.status_code
        assert error.code == "invalid_api_key", error.code
        return
    raise AssertionError("a wrong key was accepted")


def check_rate_limit(client, _args):
    try:
        client.chat.completions.create(
            model=MODEL, messages=MESSAGES, extra_headers={"x-mock-fault": "429"}
        )
    except openai.RateLimitError as error:
        assert error.status_code == 429, error.status_code
        # The SDK's retry logic reads these; the gateway must pass them through.
        assert error.response.headers.get("retry-after") == "1", dict(error.response.headers)
        assert error.response.headers.get("retry-after-ms") == "1000"
        return
    raise AssertionError("no RateLimitError for an upstream 429")


def check_upstream_bad_request(client, _args):
    try:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "robot", "content": "hi"}]
        )
    except openai.BadRequestError as error:
        assert error.param == "messages[0].role", error.param
        return
    raise AssertionError("no BadRequestError for an invalid role")


def check_cut_stream(client, _args):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        stream=True,
        extra_headers={"x-mock-fault": "reset", "x-mock-tokens": "10"},
    )
    received = 0
    try:
        for _chunk in stream:
            received += 1
    except Exception:  # the transport's error type is the SDK's business; an error is the point
        assert received > 0, "the tokens sent before the cut should have arrived"
        return
    raise AssertionError(f"a cut stream ended cleanly after {received} chunks")


def create_until_hit(client, **kwargs):
    """The raw response of `create(**kwargs)` once the gateway answers it from its cache.

    A streamed miss is stored by the gateway after its last byte went out, so the first repeat
    may come a few milliseconds early; this asks again, at most 50 times.
    """
    for _ in range(50):
        with client.chat.completions.with_streaming_response.create(**kwargs) as response:
            if response.headers.get("x-gateway-cache") == "hit":
                assert response.headers.get("age") is not None, dict(response.headers)
                return response.parse() if not kwargs.get("stream") else list(response.parse())
            response.read()
        time.sleep(0.05)
    raise AssertionError(f"never a cache hit for {kwargs}")


def check_replayed_stream(client, _args):
    messages = [{"role": "user", "content": "cache: json first, then a stream"}]
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=messages)
    assert raw.headers.get("x-gateway-cache") == "miss", dict(raw.headers)
    completion = raw.parse()
    chunks = create_until_hit(
        client,
        model=MODEL,
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage, role = [], None, None, None
    for chunk in chunks:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            role = role or choice.delta.role
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    expected = completion.choices[0].message.content
    assert role == "assistant", role
    assert "".join(pieces) == expected, (pieces, expected)
    assert len(pieces) == len(expected.split()), f"one delta per word: {pieces}"
    assert finish == completion.choices[0].finish_reason, finish
    assert usage == completion.usage, (usage, completion.usage)


def check_replayed_stream_helper(client, _args):
    """The SDK's own stream helper accumulates the replayed chunks into a final completion."""
    messages = [{"role": "user", "content": "cache: the stream helper"}]
    first = client.chat.completions.create(model=MODEL, messages=messages)
    create_until_hit(client, model=MODEL, messages=messages)  # stored: the next one is a hit
    stream_api = getattr(client.chat.completions, "stream", None) or client.beta.chat.completions.stream
    with stream_api(model=MODEL, messages=messages) as stream:
        deltas = sum(1 for event in stream if event.type == "content.delta")
        final = stream.get_final_completion()
    assert final.choices[0].message.content == first.choices[0].message.content, final
    assert final.choices[0].finish_reason == "stop", final.choices[0]
    assert deltas > 1, f"{deltas} content deltas"


def check_stream_then_json(client, _args):
    messages = [{"role": "user", "content": "cache: a stream first, then json"}]
    stream = client.chat.completions.create(
        model=MODEL, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    text = "".join(
        choice.delta.content or "" for chunk in stream for choice in chunk.choices
    )
    completion = create_until_hit(client, model=MODEL, messages=messages)
    assert completion.choices[0].message.content == text, (completion, text)
    assert completion.choices[0].finish_reason == "stop", completion.choices[0]
    assert completion.usage and completion.usage.total_tokens > 0, completion.usage


CACHE_CHECKS = [
    ("cache: a JSON answer replayed as a stream", check_replayed_stream),
    ("cache: the stream helper reads a replayed stream", check_replayed_stream_helper),
    ("cache: a streamed answer served as JSON", check_stream_then_json),
]

CHECKS = [
    ("models.list", check_models),
    ("chat.completions.create", check_non_streaming),
    ("chat.completions.create(stream=True)", check_streaming),
    ("wrong key -> AuthenticationError", check_wrong_key),
    ("upstream 429 -> RateLimitError with Retry-After", check_rate_limit),
    ("upstream 400 -> BadRequestError with param", check_upstream_bad_request),
    ("upstream cut mid-stream -> an error, not a clean end", check_cut_stream),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway", required=True, help="e.g. http://127.0.0.1:8000")
    parser.add_argument("--api-key", required=True, help="a key the gateway accepts")
    parser.add_argument("--label", default="", help="printed before each line")
    parser.add_argument(
        "--checks",
        choices=["api", "cache"],
        default="api",
        help="the API checks, or the response cache's (needs a gateway with --cache-mode all)",
    )
    args = parser.parse_args()
    checks = CACHE_CHECKS if args.checks == "cache" else CHECKS
    args.base_url = f"{args.gateway.rstrip('/')}/v1"
    # No retries: a retried failure would hide what the gateway answered the first time.
    client = OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=30)
    prefix = f"{args.label}: " if args.label else ""
    print(f"{prefix}openai {openai.__version__} against {args.base_url}")
    failed = 0
    for name, check in checks:
        try:
            check(client, args)
            print(f"{prefix}ok: {name}")
        except Exception:  # report every check, then fail once at the end
            failed += 1
            print(f"{prefix}FAILED: {name}")
            traceback.print_exc(file=sys.stdout)
    print(f"{len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
