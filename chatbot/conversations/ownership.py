"""Who owns a conversation: the explicit state machine and its persistence.

::

    bot ──request_handoff──▶ waiting ──take_over──▶ agent ──resolve──▶ resolved
     ▲ ▲                       │                     │                    │
     │ └──────hand_back────────┘                     │                    │
     └───────────────────────hand_back───────────────┘                    │
    bot ◀──────────────────────────────reopen─────────────────────────────┘
    (an agent may also take over from ``bot``; anyone may resolve from any open state)

While the state is ``agent`` the bot must not speak; :data:`BOT_MAY_SPEAK` is the set of
states in which it may. Every change is persisted with optimistic concurrency
(``UPDATE ... WHERE version = :v``): of two concurrent takeovers exactly one wins and the
other gets ``ConflictError`` (code ``conflict``). A transition the state machine does not
allow raises ``ConflictError`` with code ``not_allowed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from chatbot.conversations.models import AGENT, BOT, RESOLVED, WAITING, Conversation
from chatbot.errors import ConflictError, NotFoundError
from chatbot.storage.clock import utcnow

STATES = frozenset({BOT, WAITING, AGENT, RESOLVED})
BOT_MAY_SPEAK = frozenset({BOT, WAITING})


class Action(StrEnum):
    REQUEST_HANDOFF = "request_handoff"
    TAKE_OVER = "take_over"
    HAND_BACK = "hand_back"
    RESOLVE = "resolve"
    REOPEN = "reopen"


TRANSITIONS: dict[tuple[str, Action], str] = {
    (BOT, Action.REQUEST_HANDOFF): WAITING,
    (BOT, Action.TAKE_OVER): AGENT,
    (BOT, Action.RESOLVE): RESOLVED,
    (WAITING, Action.TAKE_OVER): AGENT,
    (WAITING, Action.HAND_BACK): BOT,
    (WAITING, Action.RESOLVE): RESOLVED,
    (AGENT, Action.HAND_BACK): BOT,
    (AGENT, Action.RESOLVE): RESOLVED,
    (RESOLVED, Action.REOPEN): BOT,
}


def next_state(state: str, action: Action) -> str:
    """The state after ``action``, or ``ConflictError(not_allowed)`` (pure, no I/O)."""
    try:
        return TRANSITIONS[(state, Action(action))]
    except KeyError:
        raise ConflictError(
            f"cannot {Action(action).value.replace('_', ' ')} a conversation that is {state}",
            code="not_allowed",
        ) from None


@dataclass(frozen=True)
class Transition:
    """A committed (or about to be committed) ownership change."""

    conversation_id: int
    action: Action
    old_state: str
    new_state: str
    version: int  # the version after the change
    agent_id: int | None
    agent_name: str


def transition(
    session: Session,
    conversation_id: int,
    action: Action,
    *,
    agent_id: int | None = None,
    agent_name: str = "",
    expected_version: int | None = None,
    reason: str = "",
) -> Transition:
    """Apply ``action`` in ``session``'s transaction with a version check.

    ``expected_version`` (what the caller's screen showed) makes a stale action fail with
    ``conflict`` even when the transition would be allowed from the current state.
    """
    row = session.execute(
        select(Conversation.state, Conversation.version, Conversation.agent_id).where(
            Conversation.id == conversation_id
        )
    ).one_or_none()
    if row is None:
        raise NotFoundError(f"conversation {conversation_id} does not exist")
    state, version, owner = row
    if expected_version is not None and expected_version != version:
        raise ConflictError(
            "the conversation changed since you looked at it; reload", code="conflict"
        )
    if action is Action.TAKE_OVER and state == AGENT:
        # The second of two takeovers: say who won rather than "not allowed".
        raise ConflictError("another agent already took over this conversation", code="conflict")
    new = next_state(state, action)
    values: dict[str, object] = {"state": new, "version": version + 1, "updated_at": utcnow()}
    if new == AGENT:
        values.update(agent_id=agent_id, agent_name=agent_name)
    elif new == BOT:
        values.update(agent_id=None, agent_name="")
    if action is Action.REQUEST_HANDOFF:
        values["handoff_reason"] = reason[:500]
    result = session.execute(
        update(Conversation)
        .where(Conversation.id == conversation_id, Conversation.version == version)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise ConflictError("another change to this conversation won the race", code="conflict")
    kept_agent = agent_id if new == AGENT else (owner if new != BOT else None)
    return Transition(
        conversation_id=conversation_id,
        action=Action(action),
        old_state=state,
        new_state=new,
        version=version + 1,
        agent_id=kept_agent,
        agent_name=agent_name,
    )
