#!/usr/bin/env python3
"""Does the gateway work for OpenAI's own Python client, unchanged?

Run by `cargo xtask compat` (which makes a venv with a pinned `openai` and starts mock-llm and
the gateway in both modes), or by hand against a running gateway whose upstream is mock-llm:

    python compat/openai_check.py --gateway http://127.0.0.1:8000 --api-key KEY

Each check prints `ok:` or `FAILED:`; the last line is `N passed, N failed`, and the exit code is
1 when anything failed. The checks use only the SDK's public API, the way an application would:
if one fails, a real client would break in the same place.
"""

import argparse
import sys
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
    args = parser.parse_args()
    args.base_url = f"{args.gateway.rstrip('/')}/v1"
    # No retries: a retried failure would hide what the gateway answered the first time.
    client = OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=30)
    prefix = f"{args.label}: " if args.label else ""
    print(f"{prefix}openai {openai.__version__} against {args.base_url}")
    failed = 0
    for name, check in CHECKS:
        try:
            check(client, args)
            print(f"{prefix}ok: {name}")
        except Exception:  # report every check, then fail once at the end
            failed += 1
            print(f"{prefix}FAILED: {name}")
            traceback.print_exc(file=sys.stdout)
    print(f"{len(CHECKS) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
