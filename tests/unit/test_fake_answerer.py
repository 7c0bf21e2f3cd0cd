"""The one fake answerer: scripted for the tests, numbered echo pieces for ``chatbot serve``."""

from __future__ import annotations

import pytest

from chatbot.errors import ConfigError
from chatbot.fake_answerer import KEEP_REQUESTS, FakeAnswerer
from chatbot.types import AnswerRequest, ReplyDone, ReplyToken
from tests import fakes


async def reply(fake: FakeAnswerer, message: str) -> tuple[list[str], ReplyDone]:
    pieces: list[str] = []
    done: list[ReplyDone] = []
    async for event in fake.answer(AnswerRequest(store_id=1, message=message)):
        if isinstance(event, ReplyToken):
            pieces.append(event.text)
        else:
            assert isinstance(event, ReplyDone)
            done.append(event)
    assert len(done) == 1
    return pieces, done[0]


def test_the_tests_use_the_same_class_as_the_server() -> None:
    assert fakes.FakeAnswerer is FakeAnswerer


async def test_the_env_spec_gives_numbered_echo_pieces() -> None:
    fake = FakeAnswerer.from_spec("5:0")
    pieces, done = await reply(fake, "where is my order")
    assert pieces == ["where#0 ", "is#1 ", "my#2 ", "where#3 ", "is#4 "]
    assert done.text == "".join(pieces) and done.reason == "fake"
    # A queued script still wins over the echo, as in the tests.
    fake.queue(["Scripted."])
    assert (await reply(fake, "hi"))[0] == ["Scripted."]
    assert fake.started == 2 and fake.finished == 2 and fake.active == 0


@pytest.mark.parametrize(("spec", "tokens", "delay"), [("40:0.05", 40, 0.05), ("yes", 40, 0.05),
                                                       ("3", 3, 0.05), ("7:0.5", 7, 0.5)])
def test_specs_that_parse(spec: str, tokens: int, delay: float) -> None:
    fake = FakeAnswerer.from_spec(spec)
    assert (fake.echo_tokens, fake.delay_s) == (tokens, delay)


@pytest.mark.parametrize("spec", ["fast", "0:0.1", "4:-1", "4:x"])
def test_bad_specs_are_config_errors(spec: str) -> None:
    with pytest.raises(ConfigError):
        FakeAnswerer.from_spec(spec)


async def test_without_a_spec_or_script_it_says_what_it_heard() -> None:
    pieces, done = await reply(FakeAnswerer(), "hello there")
    assert "".join(pieces) == "You said: hello there " and done.reason == "grounded"


async def test_it_keeps_only_the_last_requests_but_counts_them_all() -> None:
    """A fake-mode server answers for hours (``bench/load.py --fake``): what it keeps for
    inspection is bounded, the counters are not."""
    fake = FakeAnswerer(default=["ok"], keep_requests=3)
    for i in range(5):
        await reply(fake, f"q{i}")
    assert [r.message for r in fake.requests] == ["q2", "q3", "q4"]
    assert fake.started == fake.finished == 5


async def test_the_default_bound_holds_more_than_a_test_needs_and_no_more() -> None:
    fake = FakeAnswerer(default=["ok"])
    for i in range(KEEP_REQUESTS + 2):
        await reply(fake, f"q{i}")
    requests = fake.requests
    assert len(requests) == KEEP_REQUESTS >= 100
    assert (requests[0].message, requests[-1].message) == ("q2", f"q{KEEP_REQUESTS + 1}")
    assert FakeAnswerer().requests == []  # a list: tests compare and slice it as one
