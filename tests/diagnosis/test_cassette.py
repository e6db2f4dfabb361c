"""Record and replay of Messages API responses, through the SDK's http_client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest

from pytest_operator._cassette import Cassette, CassetteMiss, request_key

RESPONSES = Path(__file__).parent / "responses"
BODY: dict[str, Any] = {
    "model": "claude-opus-5",
    "max_tokens": 512,
    "system": [{"type": "text", "text": "rules", "cache_control": {"type": "ephemeral"}}],
    "messages": [{"role": "user", "content": "<case_data>\n{}\n</case_data>"}],
    "tools": [{"name": "report_diagnosis", "input_schema": {"type": "object"}}],
    "tool_choice": {"type": "tool", "name": "report_diagnosis"},
}


def payload(name: str) -> dict[str, Any]:
    data = json.loads((RESPONSES / name).read_text())
    assert isinstance(data, dict)
    return data


def client(transport: httpx2.AsyncBaseTransport, max_retries: int = 2) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        api_key="test",
        max_retries=max_retries,
        http_client=httpx2.AsyncClient(transport=transport),
    )


def test_the_key_covers_what_decides_the_answer_and_nothing_else() -> None:
    key = request_key(BODY)
    assert len(key) == 64 and int(key, 16) >= 0
    assert request_key(dict(reversed(list(BODY.items())))) == key
    assert request_key({**BODY, "max_tokens": 4096, "metadata": {"user_id": "x"}}) == key
    for field, value in [
        ("model", "claude-sonnet-5-5"),
        ("system", "other rules"),
        ("messages", [{"role": "user", "content": "other case"}]),
        ("tools", []),
        ("tool_choice", {"type": "auto"}),
    ]:
        assert request_key({**BODY, field: value}) != key, field


async def test_record_stores_the_raw_response_and_replay_serves_it_offline(
    tmp_path: Path,
) -> None:
    path = tmp_path / "nightly" / "claude.json"
    sent: list[dict[str, Any]] = []

    def api(request: httpx2.Request) -> httpx2.Response:
        sent.append(json.loads(request.content))
        return httpx2.Response(200, json=payload("crash_node-1.json"))

    recorder = Cassette(path, "record")
    async with client(recorder.transport(httpx2.MockTransport(api))) as c:
        live = await c.messages.create(**BODY)
    assert len(sent) == 1 and len(recorder) == 1
    key = request_key(sent[0])
    assert key == request_key(BODY)  # the SDK sends these fields as given: the keys agree
    stored = json.loads(path.read_text())
    assert stored["format"] == 1
    assert stored["entries"][key]["response"] == payload("crash_node-1.json")
    assert stored["entries"][key]["request"]["model"] == "claude-opus-5"
    assert "test" not in json.dumps(stored)  # no key, no headers

    player = Cassette(path, "replay")
    assert key in player
    async with client(player.transport()) as c:
        replayed = await c.messages.create(**BODY)
    assert replayed == live
    assert replayed.usage.cache_creation_input_tokens == 2716


async def test_only_the_final_success_is_recorded_after_retries(tmp_path: Path) -> None:
    answers = [
        httpx2.Response(529, json=payload("overloaded_529.json"), headers={"retry-after-ms": "10"}),
        httpx2.Response(200, json=payload("pause_node-2.json")),
    ]

    def api(request: httpx2.Request) -> httpx2.Response:
        return answers.pop(0)

    cassette = Cassette(tmp_path / "c.json", "record")
    async with client(cassette.transport(httpx2.MockTransport(api))) as c:
        message = await c.messages.create(**BODY)
    assert message.id == payload("pause_node-2.json")["id"]
    assert answers == []
    assert len(cassette) == 1
    entry = json.loads((tmp_path / "c.json").read_text())["entries"][request_key(BODY)]
    assert entry["response"]["type"] == "message"


def test_a_replay_miss_names_the_key_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    cassette = Cassette(path, "replay")
    assert len(cassette) == 0
    with pytest.raises(CassetteMiss) as info:
        cassette.response("ab" * 32)
    assert str(info.value) == (
        f"no recorded response for request key {'ab' * 32} in cassette {path} "
        "(the file does not exist): record it first with a key (mode 'record'), or the "
        "request changed (model, prompt, tools) since it was recorded"
    )


async def test_a_replay_miss_through_the_sdk_fails_at_once_without_retrying(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"format": 1, "entries": {}}))
    async with client(Cassette(path, "replay").transport(), max_retries=3) as c:
        with pytest.raises(anthropic.NotFoundError) as info:
            await c.messages.create(**BODY)
    assert f"no recorded response for request key {request_key(BODY)} in cassette {path}:" in str(
        info.value
    )


def test_bad_modes_and_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        Cassette(tmp_path / "c.json", "rewind")  # type: ignore[arg-type]
    assert str(info.value) == "cassette mode 'rewind' is not one of: record, replay"
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError) as info:
        Cassette(bad, "replay")
    assert str(info.value).startswith(f"cassette {bad} is not a cassette file: ")
    with pytest.raises(ValueError) as info:
        Cassette(tmp_path / "c.json", "record").transport()
    assert str(info.value) == f"cassette {tmp_path / 'c.json'} records: it needs an inner transport"
    with pytest.raises(RuntimeError) as rinfo:
        Cassette(tmp_path / "c.json", "replay").record("k", BODY, {})
    assert str(rinfo.value) == f"cassette {tmp_path / 'c.json'} is in mode 'replay', not 'record'"
