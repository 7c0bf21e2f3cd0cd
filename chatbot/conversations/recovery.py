"""Close bot replies that a dead server process left in the ``streaming`` state.

A reply row is created as ``streaming`` when generation starts and becomes ``complete`` or
``interrupted`` with its ``done`` event. If the process is killed (``kill -9``, OOM, power
loss) in between, the row stays ``streaming`` forever: the inbox shows a reply that never
ends and a resuming shopper gets token events with no ``done``. On start the server calls
:func:`interrupt_orphaned_replies`, which stores what was streamed as an *interrupted*
reply with a ``done`` event (the next ``seq``), exactly as a live stop would have.

Which rows are orphans: with one server process on the database (the default) every
``streaming`` row at start-up belongs to a dead process. With several processes
(``serve --poll-events``) another live process may be streaming right now, so only
replies whose last stored event is older than ``stale_after`` are closed.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from chatbot.conversations.log import NewEvent, append_events, now_iso
from chatbot.conversations.models import ChatMessage, ConversationEvent
from chatbot.protocol import chat
from chatbot.storage.clock import utcnow
from chatbot.storage.db import Database, transaction

log = logging.getLogger(__name__)

RECOVERED_REASON = "server_restart"


def _close_one(session: Session, row: ChatMessage) -> None:
    pieces = session.scalars(
        select(ConversationEvent.payload)
        .where(
            ConversationEvent.conversation_id == row.conversation_id,
            ConversationEvent.reply_id == row.public_id,
            ConversationEvent.kind == "token",
        )
        .order_by(ConversationEvent.seq)
    ).all()
    text = "".join(str(p.get("text", "")) for p in pieces)
    marker = chat.Done(
        reply_id=row.public_id,
        text=text,
        interrupted=True,
        in_reply_to=row.in_reply_to,
        at=now_iso(),
    )
    # Not bot_only: like a live interruption, the marker closes text the shopper already
    # saw, even if an agent owns the conversation now.
    done = append_events(
        session, row.conversation_id, [NewEvent.of(marker, reply_id=row.public_id)]
    )[0]
    session.execute(
        update(ChatMessage)
        .where(ChatMessage.id == row.id)
        .values(
            text=text,
            status="interrupted",
            seq=done.seq,
            reason=RECOVERED_REASON,
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )


def interrupt_orphaned_replies(db: Database, *, stale_after: timedelta | None = None) -> int:
    """Mark orphaned ``streaming`` bot replies interrupted; returns how many were closed.

    ``stale_after=None`` closes every streaming reply (one process owns the database);
    otherwise only those with no event for that long. One transaction per reply, so a
    failure leaves the others closed and the function can simply run again.
    """
    with db.session() as session:
        candidates = session.scalars(
            select(ChatMessage.id).where(
                ChatMessage.role == "bot", ChatMessage.status == "streaming"
            )
        ).all()
    cutoff = None if stale_after is None else utcnow() - stale_after
    closed = 0
    for message_id in candidates:
        with transaction(db.sessions) as session:
            row = session.get(ChatMessage, message_id)
            if row is None or row.status != "streaming":
                continue  # closed meanwhile by its (live) process
            if cutoff is not None:
                last = session.scalar(
                    select(func.max(ConversationEvent.created_at)).where(
                        ConversationEvent.conversation_id == row.conversation_id,
                        ConversationEvent.reply_id == row.public_id,
                    )
                )
                if (last or row.created_at) > cutoff:
                    continue
            _close_one(session, row)
            closed += 1
    if closed:
        log.warning(
            "marked %d reply(ies) left streaming by a stopped server as interrupted", closed
        )
    return closed
