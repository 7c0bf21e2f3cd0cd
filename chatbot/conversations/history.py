"""What a reply starts from: the conversation's recent turns, the orders a guest proved and
who the shopper is.

Synchronous reads in the caller's transaction, shared by the bot's replies
(:meth:`~chatbot.conversations.service.ConversationService.begin_reply`), the console's
copilot (:func:`chatbot.agents.inbox.copilot_input`) and an agent's own order actions
(:meth:`~chatbot.conversations.service.ConversationService.shopper`), so all see the same
context.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from chatbot.conversations.log import ConversationRef
from chatbot.conversations.models import ChatMessage, Conversation, GuestVerification
from chatbot.types import Turn

HISTORY_TURNS = 8


def recent_turns(
    session: Session, conversation_id: int, before_seq: int, limit: int = HISTORY_TURNS
) -> list[Turn]:
    """The last ``limit`` shopper/bot/agent messages before ``before_seq``, oldest first
    (internal notes and empty texts left out)."""
    rows = session.scalars(
        select(ChatMessage)
        .where(
            ChatMessage.conversation_id == conversation_id,
            ChatMessage.internal.is_(False),
            ChatMessage.seq < before_seq,
            ChatMessage.text != "",
        )
        .order_by(ChatMessage.seq.desc())
        .limit(limit)
    ).all()
    return [Turn(role=r.role, text=r.text) for r in reversed(rows)]  # type: ignore[arg-type]


def verified_orders(session: Session, conversation_id: int) -> frozenset[str]:
    """Order numbers a guest proved in this conversation (number + checkout email)."""
    return frozenset(
        session.scalars(
            select(GuestVerification.order_number).where(
                GuestVerification.conversation_id == conversation_id
            )
        )
    )


def shopper_of(session: Session, conv: ConversationRef) -> tuple[int | None, list[str]]:
    """Who the conversation's shopper is: the signed-in customer, else the one the bot
    identified as the store's policy says (``customer_id`` in the dialogue state), or
    None; and the orders a guest proved, sorted."""
    customer_id = conv.customer_id
    if customer_id is None:
        dialogue = session.scalar(select(Conversation.dialogue)
                                  .where(Conversation.id == conv.id)) or {}
        found = dialogue.get("customer_id") if isinstance(dialogue, dict) else None
        customer_id = int(found) if isinstance(found, int) and found > 0 else None
    return customer_id, sorted(verified_orders(session, conv.id))
