"""The in-process hub: fan-out, de-duplication by seq, slow consumers, reply cancellation."""

from __future__ import annotations

import asyncio

from chatbot.conversations.hub import ConversationHub, HubItem, StoredEvent


def _item(seq: int, conv: int = 1, store: int = 7) -> HubItem:
    return HubItem(conv, store, stored=StoredEvent(conv, seq, "token", {"text": str(seq)}))


def _drain(sub) -> list[int]:  # type: ignore[no-untyped-def]
    out = []
    while not sub.queue.empty():
        out.append(sub.queue.get_nowait().stored.seq)
    return out


async def test_fan_out_by_conversation_and_store() -> None:
    hub = ConversationHub()
    conv, other, store = hub.subscribe(1), hub.subscribe(2), hub.subscribe_store(7)
    hub.publish(_item(1))
    hub.publish(_item(1, conv=2))
    assert _drain(conv) == [1] and _drain(other) == [1] and _drain(store) == [1, 1]


async def test_second_publish_of_an_event_is_dropped() -> None:
    hub = ConversationHub()
    sub = hub.subscribe(1)
    for seq in (1, 2, 2, 1, 3):
        hub.publish(_item(seq))
    assert _drain(sub) == [1, 2, 3]


async def test_one_subscribers_replay_does_not_hide_events_from_another() -> None:
    hub = ConversationHub()
    agent = hub.subscribe(1)
    shopper = hub.subscribe(1)
    hub.seen(1, 5)  # the shopper's replay read the log up to 5 ...
    hub.publish(_item(5))  # ... while seq 5 was still on its way to the hub
    assert _drain(agent) == [5] and _drain(shopper) == [5]
    assert hub.followed() == {1: 5}


async def test_slow_consumer_is_flagged_not_buffered_forever() -> None:
    hub = ConversationHub(queue_size=3)
    sub = hub.subscribe(1)
    for seq in range(1, 6):
        hub.publish(_item(seq))
    assert sub.overflowed.is_set() and sub.queue.qsize() == 3


async def test_unsubscribe_forgets_positions() -> None:
    hub = ConversationHub()
    sub = hub.subscribe(1)
    hub.publish(_item(4))
    assert hub.high(1) == 4
    sub.close()
    assert hub.high(1) is None and hub.followed() == {} and hub.subscribers(1) == 0


async def test_cancel_reply_reaches_the_registered_canceller() -> None:
    hub = ConversationHub()
    reasons: list[str] = []

    def cancel(reason: str) -> bool:
        reasons.append(reason)
        return True

    assert hub.cancel_reply(1) is False
    hub.register_reply(1, cancel)
    assert hub.cancel_reply(1, "takeover") is True and reasons == ["takeover"]
    hub.unregister_reply(1, cancel)
    assert hub.cancel_reply(1) is False
    await asyncio.sleep(0)


async def test_a_store_notice_reaches_that_stores_followers_only() -> None:
    hub = ConversationHub()
    conv, store, other = hub.subscribe(1), hub.subscribe_store(7), hub.subscribe_store(8)
    assert hub.followed_stores() == {7, 8}
    hub.publish_store(_item(5, conv=1))
    assert _drain(store) == [5] and _drain(conv) == [] and _drain(other) == []
    hub.publish(_item(5, conv=1))  # the notice took no seq: the real event still goes out
    assert _drain(conv) == [5]
    other.close()
    assert hub.followed_stores() == {7}
