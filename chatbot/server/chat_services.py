"""The narrow services a shopper socket's session may use, one method per request.

:class:`ChatServices` answers the requests of :mod:`chatbot.session.effects` for one
connection: store and customer lookups, the conversation service, the reply manager, the
hub's high-water marks, the order-action desk and the connection's and address's rate
limits. The socket itself
only writes frames, closes, and follows the hub.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chatbot.protocol import chat
from chatbot.server.limits import FRAMES_BURST, FRAMES_PER_SECOND, TokenBucket, per_minute
from chatbot.server.replies import PendingMessage
from chatbot.server.store_lookup import StoreLookup
from chatbot.session import effects as fx

if TYPE_CHECKING:
    from chatbot.server.app import ChatServer


class ChatServices:
    """What one shopper connection's session may ask of the server."""

    def __init__(self, app: ChatServer, ip: str) -> None:
        self.app = app
        self.ip = ip
        limits = app.settings.limits
        self.message_bucket = per_minute(limits.messages_per_minute_per_connection)
        self.frame_bucket = TokenBucket(FRAMES_BURST, FRAMES_PER_SECOND)
        self.stores = StoreLookup(app.conversations.run)

    async def perform(self, request: fx.Effect) -> Any:  # noqa: C901 (one case per request)
        """Answer one request of the session (exceptions go back to the session)."""
        app, service = self.app, self.app.conversations
        match request:
            case fx.FrameAllowed():
                return self.frame_bucket.allow() and app.ip_frames.allow(self.ip)
            case fx.MessageAllowed():
                return self.message_bucket.allow() and app.ip_messages.allow(self.ip)
            case fx.HandoffAllowed():
                return app.handoff_allowed(self.ip)
            case fx.FindStore(key):
                return await self.stores.store(key)
            case fx.FindCustomer(store_id, customer):
                return await self.stores.customer(store_id, customer)
            case fx.FindConversation(store_id, public_id, customer_id, token):
                return await service.find_for_resume(store_id, public_id, customer_id, token)
            case fx.IdTaken(public_id):
                return await service.exists(public_id)
            case fx.CreateConversation(store_id, customer_id, public_id, token):
                conv, _ = await service.open(
                    store_id, customer_id, public_id=public_id, resume_token=token
                )
                return conv
            case fx.Replay(conv, after_seq):
                events, high = await service.replay(conv, after_seq)
                app.hub.seen(conv.id, high)  # an event-log poller resumes from here
                return events, high
            case fx.Fresh(conv):
                return await service.get(conv.id)
            case fx.CanQueue(conv):
                return app.replies.can_accept(conv.id)
            case fx.StoreMessage(conv, message_id, text):
                return await service.add_shopper_message(conv, message_id, text)
            case fx.SubmitReply(conv, message_id, text, seq, confirm=confirm):
                app.metrics.messages.inc()
                pending = PendingMessage(message_id, text, seq, ip=self.ip, confirm=confirm)
                app.replies.submit(conv, pending)
            case fx.CheckAction(conv, action_id):
                await app.actions.check_confirm(conv, action_id)
            case fx.PublishTyping(conv, active):
                typing = chat.Status(kind="typing" if active else "idle")
                service.publish_ephemeral(conv, typing, audience="agents")
            case fx.RecordFeedback(conv, reply_id, rating, comment):
                await service.record_feedback(conv, reply_id, rating, comment)
            case fx.StopReply(conv, reason, reply_id):
                app.replies.stop(conv.id, reason, reply_id)
            case fx.EndConversation(conv, rating, comment):
                await service.end(conv, rating, comment)
            case fx.Transition(conv, action, reason):
                await service.transition(conv, action, reason=reason)
            case _:
                raise TypeError(f"not a request: {request!r}")
        return None
