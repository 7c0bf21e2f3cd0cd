"""The narrow services a console socket's session may use, one method per request.

:class:`AgentServices` answers the requests of :mod:`chatbot.session.agent_effects` for one
console connection: the inbox and the team (:mod:`chatbot.agents.services`), the
conversation service's writes (agent messages, notes, takeovers), the reply manager, the
order-action desk, the connection's frame rate and the copilot. The socket itself only
writes frames, closes, follows the hub and runs its tasks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chatbot.agents.services import InboxService, TeamService
from chatbot.answering.router import route
from chatbot.conversations.log import ConversationRef
from chatbot.server import console_copilot
from chatbot.server.limits import FRAMES_BURST, FRAMES_PER_SECOND, TokenBucket
from chatbot.session import agent_effects as ax

if TYPE_CHECKING:
    from chatbot.server.app import ChatServer


class AgentServices:
    """What one console connection's session may ask of the server."""

    def __init__(self, app: ChatServer) -> None:
        self.app = app
        self.inbox = InboxService(app.conversations.run, route)
        self.team = TeamService(app.conversations.run)
        self.frames = TokenBucket(FRAMES_BURST, FRAMES_PER_SECOND)

    async def perform(self, request: ax.AgentEffect) -> Any:  # noqa: C901 (one case each)
        """Answer one request of the session (exceptions go back to the session)."""
        app, inbox, desk = self.app, self.inbox, self.app.actions
        match request:
            case ax.FrameAllowed():
                return self.frames.allow()
            case ax.SignIn(token):
                return await self.team.sign_in(token)
            case ax.Authorize(token, store_id):
                return await self.team.authorize(token, store_id)
            case ax.ApplyTeam(token, action):
                return await self.team.apply(token, action)
            case ax.LookupStore(key):
                return await inbox.store(key)
            case ax.LookupConversation(public_id):
                return await inbox.conversation(public_id)
            case ax.OwnerId(conversation_id):
                return await inbox.owner_id(conversation_id)
            case ax.Owner(conversation_id):
                return await inbox.owner(conversation_id)
            case ax.InboxSnapshot(store_id, agent_id, kind, q):
                return await inbox.snapshot(store_id, agent_id, kind, q)
            case ax.InboxUpdates(store_id, ids, agent_id, kind, q):
                return await inbox.updates(store_id, ids, agent_id, kind, q)
            case ax.MarkRead(agent_id, conversation_id):
                await inbox.mark_read(agent_id, conversation_id)
            case ax.Transcript(conv):
                events, high = await app.conversations.replay(conv, 0, include_internal=True)
                app.hub.seen(conv.id, high)  # an event-log poller resumes from here
                return events, high
            case ax.Details(conv):
                details = await inbox.details(conv.id)
                # The customer panel lists the conversation's order actions and what the
                # form for an agent's own action offers (issue #19).
                actions = await desk.of_conversation(conv)
                form = await desk.form(conv)
                return {**details, "customer": {**details["customer"], "actions": actions,
                                                "action_form": form}}
            case ax.Fresh(conv):
                return await app.conversations.get(conv.id)
            case ax.AgentTransition(conv, action, agent_id, agent_name):
                await app.conversations.transition(
                    conv, action, agent_id=agent_id, agent_name=agent_name
                )
            case ax.StopReply(conv, reason, reply_id):
                app.replies.stop(conv.id, reason, reply_id)
            case ax.AgentMessage(conv, text, agent_id, agent_name, internal):
                await app.conversations.add_agent_message(
                    conv, text, agent_id=agent_id, agent_name=agent_name, internal=internal
                )
            case ax.Publish(conv, event):
                app.conversations.publish_ephemeral(conv, event)
            case ax.ActionQueue(store_id):
                return await desk.queue(store_id)
            case ax.SetModes(store_id, modes, agent):
                await desk.set_modes(store_id, modes, agent)
            case ax.Approve(store_id, action_id, agent):
                await desk.approve(store_id, action_id, agent)
            case ax.Reject(store_id, action_id, agent, reason):
                await desk.reject(store_id, action_id, agent, reason)
            case ax.Propose(conv, kind, params, agent):
                return (await desk.propose(conv, kind, params, agent)).to_wire()
            case ax.AnswerProposal(conv, action_id, accept, agent):
                outcome = await desk.answer(conv, action_id, accept, agent)
                return {**outcome.to_event(), "details": outcome.details}
            case _:
                raise TypeError(f"not a request: {request!r}")
        return None

    async def suggest(self, conv: ConversationRef, send: console_copilot.Send) -> None:
        """Stream a copilot suggestion for ``conv`` through ``send`` (``not_ready`` while
        the model loads)."""
        answerer = self.app.answerer if self.app.is_ready() else None
        await console_copilot.suggest(self.inbox, answerer, conv, send)

