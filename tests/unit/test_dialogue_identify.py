"""Identification on a store that identifies shoppers (τ: email, or name + zip) does not get
in the way of questions about the policy, and never asks twice in the same words."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from answering_support import FakeEngine, FakeHit, KeywordRetriever

from chatbot.answering import identify as identifying
from chatbot.answering.pipeline import Pipeline, collect
from chatbot.settings import Settings
from chatbot.storage.db import Database
from chatbot.types import AnswerRequest, ReplyDone
from tests.unit.tau_support import needs_tau, store_id

pytestmark = needs_tau

RETURN_POLICY = FakeHit(
    "policy", "policy-return-delivered-order", "Return delivered order",
    "An order can only be returned if its status is 'delivered'. The refund must either go "
    "to the original payment method, or an existing gift card.", 0.0)


@pytest.fixture()
def pipeline(tau_db: Database, tmp_path: Path) -> Pipeline:
    settings = Settings.from_env({}, data_dir=tmp_path, adapter_path="none")
    retriever = KeywordRetriever({store_id(tau_db): [RETURN_POLICY]})
    return Pipeline(tau_db, retriever, FakeEngine(), settings)


async def say(pipeline: Pipeline, messages: list[str]) -> list[ReplyDone]:
    store = store_id(pipeline.db)
    state: dict[str, Any] | None = None
    key = f"c_{uuid.uuid4().hex[:8]}"
    out = []
    for message in messages:
        done = await collect(pipeline.answer(
            AnswerRequest(store, message, state=state, conversation_key=key)))
        state = done.state
        out.append(done)
    return out


async def test_a_question_about_the_policy_needs_no_account(pipeline: Pipeline) -> None:
    (done,) = await say(pipeline, ["Can I return an order that is still processed and not "
                                   "delivered?"])
    assert done.reason != "identify_needed"
    assert [s.id for s in done.sources] == ["policy-return-delivered-order"]
    assert "'delivered'" in done.text


async def test_a_request_still_asks_who_the_shopper_is(pipeline: Pipeline) -> None:
    (done,) = await say(pipeline, ["I want to return order #W7464385"])
    assert done.text == identifying.ASK


async def test_asked_again_the_request_is_worded_differently(pipeline: Pipeline) -> None:
    first, again = await say(pipeline, ["Has my order been delivered?", "it's #W7464385"])
    assert first.text == identifying.ASK
    assert again.text == identifying.ASK_AGAIN != first.text
    assert "email" in again.text and not again.sources
