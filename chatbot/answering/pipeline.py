"""The answering pipeline: route, fetch facts, prompt, stream through the guard, cite.

``Pipeline.answer`` implements :class:`chatbot.types.Answerer`. Code decides everything
that must be right every time (whose orders may be read, when to ask for verification,
when to hand off); the model only turns a few fact lines into a sentence or two, and
the grounding guard removes any number it made up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import threading
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from chatbot.answering import escalation, replies
from chatbot.answering import identify as identifying
from chatbot.answering.acting import (
    MODIFY_DEFAULT_ADDRESS,
    ActionFlow,
    ActionPlan,
    Who,
    is_no,
    is_yes,
    kind_for_order,
    requested_kind,
    supplies_detail,
)
from chatbot.answering.claims import REFUSAL, ClaimContext, SentenceGuard
from chatbot.answering.dialogue import DialogueState, normalise
from chatbot.answering.facts import (
    Fact,
    facts_used,
    gives_contact_asked,
    hit_fact,
    order_fact,
    order_summary_fact,
    sentence_similarity,
    stock_fact,
    topic_stems,
)
from chatbot.answering.prompt import build_prompt_ids
from chatbot.answering.router import Intent, Route, route, strip_emails, strip_instructions
from chatbot.security import guest_verification  # issue #18: guest verification limits
from chatbot.types import AnswerRequest, ReplyDone, ReplyEvent, ReplyToken, Source
from knowledge_base import orders as order_queries

if TYPE_CHECKING:
    from chatbot.settings import Settings
    from chatbot.storage.db import Database
    from knowledge_base.models import Order
    from knowledge_base.retrieval import Hit, Retriever

log = logging.getLogger(__name__)

# Facts from retrieval given to the model at most (best first).
MAX_HIT_FACTS = 3
# A hit joins the prompt only if it scores at least this share of the best hit's score.
HIT_SCORE_RATIO = 0.85
# A top retrieval score from which code is sure the facts answer the question
# (bench/answer_min_score.py: answerable questions mostly score above it; below it, between
# retrieval_min_score and this, the model may say the facts do not answer, and the reply
# hands off: "Do you rent out ski equipment?" finds the ski shell at 0.42).
CONFIDENT_SCORE = 0.5
# Below this retrieval score an article must also be about what was asked (see _about):
# a sentence of it at least ABOUT_SIMILARITY (MiniLM cosine) from the question, or every
# topic word of the question in it; else code hands off.
ABOUT_SCORE = 0.55
ABOUT_SIMILARITY = 0.45
# Seconds between the words of a checked sentence (about the decode speed on 2 cores).
WORD_PACE_S = 0.01
# Orders listed when the shopper's question could mean several of them.
MAX_LISTED_ORDERS = 5
# The chat template's end-of-turn marker: generation stops there.
STOP = ("<|im_end|>", "<|endoftext|>")


class EngineLike(Protocol):
    """What the pipeline needs from :class:`chatbot.engine.engine.Engine`."""

    tokenizer: Any

    def stream(self, request: Any) -> AsyncIterator[str]: ...


@dataclass
class Plan:
    """What to say: either facts for the model, or a fixed reply."""

    facts: list[Fact] = field(default_factory=list)
    fixed: str | None = None
    handoff: bool = False
    reason: str = "grounded"
    sources: list[Source] = field(default_factory=list)
    verified: frozenset[str] = frozenset()
    # The message as the model should see it (e.g. without the email a guest sent).
    message: str | None = None
    # The product a follow-up was resolved to ("it" -> this product), for the state.
    product: tuple[str, str] | None = None
    # Code is sure the facts answer (a strong retrieval hit, an order, a stock fact): the
    # model's "I don't know" is then replaced. Below CONFIDENT_SCORE the model may decline,
    # and the reply hands off (see docs/answering.md, "What the model may decide").
    confident: bool = True
    # The orders the facts are about (ORM rows, only while planning).
    orders: list[Any] = field(default_factory=list)
    # An order action proposed or answered (acting.ActionPlan), for ReplyDone and state.
    acted: ActionPlan | None = None
    # A reply that hands the conversation to the team: who, which order, what they wanted
    # (stored as the handoff reason; the console's summary leads with it).
    handoff_note: str = ""


@dataclass
class PipelineStats:
    """Counters for /metrics and the eval report (per Pipeline instance)."""

    replies: int = 0
    generated: int = 0
    guard_fired: int = 0
    replies_guarded: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    # Claim-guard firings by check ("number", "status", "polarity", "role", ...).
    guard_reasons: Counter[str] = field(default_factory=Counter)
    # Shopper messages whose "reply only with ..." instruction was cut.
    instructions_removed: int = 0


class Pipeline:
    """Answers one shopper message at a time; safe to share across conversations."""

    def __init__(
        self,
        db: Database,
        retriever: Retriever | None,
        engine: EngineLike,
        settings: Settings,
    ) -> None:
        self.db = db
        self.retriever = retriever
        self.engine = engine
        self.settings = settings
        self.stats = PipelineStats()
        self._synced: set[int] = set()
        self._sync_lock = threading.Lock()
        # by store: (index generation it was read at, titles by source id, kind words)
        self._catalogues: dict[int, tuple[int | None, list[tuple[str, str]], set[str]]] = {}
        # by store: (index generation it was read at, article title names by source id)
        self._articles: dict[int, tuple[int | None, dict[str, set[str]]]] = {}
        self._flow: ActionFlow | None = None

    @property
    def actions(self) -> ActionFlow:
        """Order actions (created on first use: most conversations never act)."""
        if self._flow is None:
            from chatbot.actions.service import ActionService

            self._flow = ActionFlow(ActionService(self.db))
        return self._flow

    def prepare(self, store_id: int, *, progress: bool = False) -> None:
        """Bring the store's search index up to date now instead of on its first question."""
        if self.retriever is None:
            return
        with self._sync_lock:
            self.retriever.sync(store_id, progress=progress)
            self._synced.add(store_id)

    async def start(self) -> None:
        """Start the engine (its batching loop), when it has one."""
        start = getattr(self.engine, "start", None)
        if start is not None:
            await start()

    async def close(self) -> None:
        """Stop the engine; pending replies are cancelled by the engine."""
        close = getattr(self.engine, "close", None)
        if close is not None:
            await close()

    async def answer(self, request: AnswerRequest) -> AsyncIterator[ReplyEvent]:
        """Yield the reply as ``ReplyToken`` pieces, then one ``ReplyDone`` (whose ``state``
        is the dialogue state the next request of the conversation starts from)."""
        state = DialogueState.from_json(request.state)
        message, instructed = strip_instructions(request.message)
        if instructed:
            self.stats.instructions_removed += 1
            request = dataclasses.replace(request, message=message)
        # A conversation from before dialogue state existed (history, no state) is
        # routed by the older history rules.
        legacy = request.state is None and bool(request.history)
        decision = route(request.message, request.history, None if legacy else state)
        plan = await asyncio.to_thread(self._planned, request, decision, state)
        if request.for_agent and plan.fixed is not None and plan.handoff:
            # The copilot suggests what an agent could send: never "I'm connecting you".
            text = replies.ASKED_FOR_PERSON if plan.reason == "asked_human" else (
                replies.NO_GROUNDED_ANSWER
            )
            plan = dataclasses.replace(plan, fixed=text, handoff=False)
        log.debug("route %s -> %s (%d facts)", decision.intent, plan.reason, len(plan.facts))
        if plan.fixed is not None:
            events = self._fixed(plan.fixed, plan)
        else:
            events = self._generate(request, plan, state)
        try:
            async for event in events:
                if isinstance(event, ReplyDone):
                    self.stats.replies += 1
                    self.stats.reasons[event.reason] += 1
                    after = next_state(state, request.message, decision, plan, event)
                    event = dataclasses.replace(event, state=after.to_json())
                yield event
        finally:
            # Closing this stream (the shopper left) closes the engine's stream now,
            # not whenever the garbage collector gets to it.
            await events.aclose()

    # -- deciding what to say (sync: database and retrieval) ---------------------------

    def _planned(self, request: AnswerRequest, decision: Route, state: DialogueState) -> Plan:
        """:meth:`_plan_turn`, with the store's rule cited when an action is refused by it
        ("delivered more than 30 days ago": the return policy says 30 days)."""
        plan = self._plan_turn(request, decision, state)
        asked_if = re.match(r"\W*(can|could|may) (i|we)\b", request.message, re.IGNORECASE)
        if (
            asked_if
            and plan.fixed
            and plan.reason in ("action_detail", "action_proposed")
            and state.pending not in ("action_detail", "confirm_action")
        ):
            # "Can I change the size?" is answered yes before the first question.
            plan.fixed = f"Yes, you can. {plan.fixed}"
        refusal = plan.fixed or "" if plan.reason == "action_refused" else ""
        numbers = re.findall(r"\d+", re.sub(r"#\s?[A-Za-z]{0,3}\d+", " ", refusal))
        if numbers:
            # the article that states the number the refusal gives
            found = self._search(request.store_id, plan.fixed or "", k=8) + self._search(
                request.store_id, "how many days do I have to return or exchange an item", k=8
            )
            rule = [
                h for h in found
                if h.kind != "product" and all(re.search(rf"\b{n}\b", h.snippet) for n in numbers)
            ]
            if rule:
                plan.sources = [*plan.sources, hit_fact(rule[0]).source()]
        if not request.for_agent:
            self._hand_over(request, decision, state, plan)
        return plan

    def _plan_turn(self, request: AnswerRequest, decision: Route, state: DialogueState) -> Plan:
        """The plan for this turn: the answer to a pending action question first, then the
        store's identification, then an action on the account, then the usual plan."""
        if request.customer_id is None and state.customer_id:
            # Identified earlier in this conversation (store policy): acts as signed in.
            request = dataclasses.replace(request, customer_id=state.customer_id)
        if request.confirm is not None and not request.for_agent:
            # A confirm frame: the shopper pressed Confirm / Keep my order on a proposal.
            action_id, accept = request.confirm
            return _acted_plan(
                self.actions.answer(
                    request.store_id, action_id, accept,
                    conversation_id=request.conversation_key or "",
                )
            )
        if not request.for_agent:
            acted = self._answer_pending_action(request, decision, state)
            if acted is not None:
                return acted
            want = escalation.cannot_do(request.message)
            if want is not None:
                # Something no action does ("change the name on my account", "price match
                # my order"): a person, with a note of who wants what.
                return Plan(fixed=escalation.reply_for(want), handoff=True,
                            reason=escalation.CANNOT_DO, handoff_note=want)
            identified = self._identify(request, decision, state)
            if identified is not None:
                return identified
            started = self._start_account_action(request, decision, state)
            if started is not None:
                return started
        return self.plan(request, decision, state)

    def _answer_pending_action(
        self, request: AnswerRequest, decision: Route, state: DialogueState
    ) -> Plan | None:
        """A yes / no to a proposal, or the detail an action was waiting for."""
        conversation = request.conversation_key or ""
        message = request.message
        if (decision.intent is Intent.HANDOFF and state.action_kind
                and state.pending in ("action_detail", "confirm_action")):
            # A person asked for in the middle of an action (never read as a detail: "can I
            # speak to a human" is no address); the note says where the action stood.
            return Plan(fixed=replies.HANDOFF, handoff=True, reason="asked_human",
                        handoff_note=self._action_stage(request, state))
        if state.pending == "confirm_action" and state.action_id:
            if is_yes(message) or is_no(message):
                acted = self.actions.answer(
                    request.store_id, state.action_id, is_yes(message),
                    conversation_id=conversation,
                )
                return _acted_plan(acted)
            if requested_kind(message) or decision.order_numbers:
                # A new request (a change of mind): the open proposal is declined, so a
                # late yes can never execute it; the new request is planned as usual.
                self.actions.answer(request.store_id, state.action_id, False,
                                    conversation_id=conversation)
            return None  # another question: the proposal stays open until it expires
        if state.pending == "action_detail" and state.action_kind:
            if is_no(message):
                return _acted_plan(ActionPlan(replies_declined(), "action_declined"))
            number = state.pending_orders[0] if state.pending_orders else ""
            if _starts_over(message, decision, state, number):
                return None
            if not supplies_detail(state.action_kind, message, state.action_step):
                return None  # another question ("and #W6310710?"): answered as usual
            with self.db.sessions() as session:
                order = self._order_for(session, request, number) if number else None
                if order is None and state.action_kind != MODIFY_DEFAULT_ADDRESS:
                    return None
                step = self._advance(session, request, state.action_kind, order,
                                     state.action_params, state.action_step)
            return _acted_plan(step) if step is not None else None
        return None

    def _identify(
        self, request: AnswerRequest, decision: Route, state: DialogueState
    ) -> Plan | None:
        """Identify a shopper who is not signed in as the store's policy says (email, or
        name + zip), or ask them to before an order question or action."""
        if request.customer_id is not None:
            return None
        methods = identifying.store_methods(self.db, request.store_id)
        if not {"email", "name_zip"} & set(methods):
            return None  # order number + email: the guest flow in _guest_plan
        from chatbot.answering.router import extract_email

        email = extract_email(request.message) if "email" in methods else None
        if email and decision.order_numbers and "order_email" in methods:
            email = None  # proving that order, as a guest
        name_zip = (identifying.parse_name_zip(request.message)
                    if "name_zip" in methods else None)
        if email or name_zip:
            customer, refused = identifying.identify(
                self.db, request, email=email, name_zip=None if email else name_zip)
            if refused:
                return _acted_plan(ActionPlan(
                    guest_verification.LOCKED_REPLY, "verify_locked", handoff=True,
                    pending="identify", extra={"request": state.pending_request}))
            if customer is None:
                return _acted_plan(ActionPlan(
                    identifying.FAILED, "identify_failed", pending="identify",
                    extra={"request": state.pending_request}))
            return self._identified(request, state, customer)
        # "Can I exchange a t-shirt for a pair of shoes?" asks what the policy allows (the
        # router found no order in it): answered from the policy, with no account needed;
        # "I want to cancel order #W1" and "please cancel it" ask to act.
        general = decision.intent is Intent.POLICY and bool(_GENERAL_ASK.match(request.message))
        wants = (requested_kind(request.message) and not general) or (
            decision.intent is Intent.ORDER
        )
        if wants and not (decision.order_numbers and "order_email" in methods):
            # (Asked just before: the same request in other words, never the same reply.)
            ask = identifying.ASK_AGAIN if state.last_reply == identifying.ASK else identifying.ASK
            return _acted_plan(ActionPlan(ask, "identify_needed",
                                          pending="identify",
                                          extra={"request": request.message}))
        return None

    def _identified(self, request: AnswerRequest, state: DialogueState, customer: Any
                    ) -> Plan:
        """The reply once identified: the request made before (or in the same message)."""
        name = customer.first_name or customer.name or "there"
        found = identifying.FOUND.format(name=name)
        rest = strip_emails(request.message)
        rest = re.sub(r"\b(?i:my name is|i am|i'm)\s+[A-Z]\w+\s+[A-Z]\w+", " ", rest)
        asks = bool(requested_kind(rest)) or route(rest).intent is Intent.ORDER
        pending = rest if asks else state.pending_request
        if not pending:
            return _acted_plan(ActionPlan(identifying.FOUND_ASK.format(name=name),
                                          "identified", extra={"customer_id": customer.id}))
        follow_request = dataclasses.replace(request, message=pending, customer_id=customer.id)
        fresh = DialogueState(turns=state.turns)
        follow = self._plan_turn(follow_request, route(pending, (), fresh), fresh)
        if follow.acted is not None:
            acted = dataclasses.replace(
                follow.acted, text=f"{found} {follow.fixed or follow.acted.text}",
                extra={**follow.acted.extra, "customer_id": customer.id})
            return dataclasses.replace(follow, fixed=acted.text, acted=acted)
        if follow.fixed is not None:
            follow.fixed = f"{found} {follow.fixed}"
        follow.acted = ActionPlan("", "identified", extra={"customer_id": customer.id})
        return follow

    # -- handing a request to the team (chatbot/answering/escalation.py) -----------------

    def _hand_over(self, request: AnswerRequest, decision: Route, state: DialogueState,
                   plan: Plan) -> None:
        """Make ``plan`` hand the conversation to the team where the bot cannot help
        further, and write the note the console's handoff summary leads with (who, which
        order, what they wanted): a policy refusal the shopper does not accept ("... and
        refund me anyway") or with nothing else to offer, a kind the store turned off, a
        request no action does, a person asked for (in the middle of an action: where it
        stood)."""
        acted = plan.acted
        code = str(acted.extra.get("code", "")) if acted is not None else ""
        if plan.reason == "action_refused" and acted is not None and (
                code in escalation.POLICY_CODES):
            off = code == "action_off"
            if not (off or escalation.insists(request.message)
                    or not acted.extra.get("alternatives")):
                return  # the reason and what is possible instead are the answer
            refusal = str(acted.extra.get("refusal", ""))
            plan.fixed = (f"{refusal} {escalation.PASSED_ON}" if off
                          else f"{plan.fixed} {escalation.PASSING_ON}")
            plan.handoff, plan.reason = True, escalation.CANNOT_DO
            want = escalation.KIND_WANTS.get(acted.action_kind, "help with an order")
            bot = ("the store turned this off in chat" if off
                   else f"the store's policy refuses it: {refusal}")
        elif plan.reason == escalation.CANNOT_DO:
            want, bot = plan.handoff_note, "no action in chat does this"
        elif plan.reason == "asked_human" and plan.handoff:
            want, bot = "to talk to a person", plan.handoff_note
        else:
            return
        order = (acted.sources_order if acted is not None and acted.sources_order
                 else self._order_in_view(decision, state))
        plan.handoff_note = escalation.note(self._who(request, state), order, want,
                                            said=request.message, bot=bot)

    def _who(self, request: AnswerRequest, state: DialogueState) -> str:
        """The customer as an agent should read it: name and email, or what a guest proved."""
        from knowledge_base.models import Customer

        customer_id = request.customer_id or state.customer_id or None
        if customer_id:
            with self.db.sessions() as session:
                customer = session.get(Customer, customer_id)
                if customer is not None and customer.store_id == request.store_id:
                    name = customer.name or customer.source_id
                    return f"{name} ({customer.email})" if customer.email else name
        if request.verified_orders:
            return "A guest who proved order " + ", ".join(sorted(request.verified_orders))
        return "A shopper who is not signed in"

    @staticmethod
    def _order_in_view(decision: Route, state: DialogueState) -> str:
        if decision.order_numbers:
            return decision.order_numbers[0]
        if state.pending_orders:
            return state.pending_orders[0]
        return state.order or ""

    def _action_stage(self, request: AnswerRequest, state: DialogueState) -> str:
        """Where an action stood when the shopper asked for a person."""
        kind = escalation.KIND_WANTS.get(state.action_kind, state.action_kind)
        if state.pending == "confirm_action" and state.action_id:
            from chatbot.actions.service import ActionIdError

            try:
                proposal = self.actions.service.get(state.action_id, store_id=request.store_id)
            except ActionIdError:
                return f"was about to confirm {kind}"
            return (f"was offered “{proposal.summary}” and has not answered (nothing was "
                    "changed; the offer stays open until it expires)")
        collected = ", ".join(f"{k}: {v}" for k, v in sorted(state.action_params.items())
                              if k != "order" and isinstance(v, str | int | float))
        return (f"was asked for the details of {kind}"
                + (f" (so far {collected})" if collected else "") + "; nothing was changed")

    def _start_account_action(
        self, request: AnswerRequest, decision: Route, state: DialogueState
    ) -> Plan | None:
        """An action on the account (the default address), or on the order in focus when
        the message names none ("please change the gloves to size L" after the order was
        shown; the router may read that as a product question)."""
        kind = requested_kind(request.message)
        if kind is None:
            return None
        if (decision.intent is Intent.POLICY and _GENERAL_ASK.match(request.message)
                and _ANY_ITEM.search(request.message)
                and not _MINE.search(request.message)):
            # "can I exchange a watch for a different product type?" with an order in focus
            # asks what the policy allows, as it does without one (see _identify).
            return None
        if kind == MODIFY_DEFAULT_ADDRESS:
            if request.customer_id is None:
                return None
            with self.db.sessions() as session:
                acted = self._advance(session, request, kind, None, {}, "", first=True)
            return _acted_plan(acted) if acted is not None else None
        if decision.intent is Intent.ORDER or decision.order_numbers or not state.order:
            return None  # _plan_order finds the order (or asks which one)
        with self.db.sessions() as session:
            order = self._order_for(session, request, state.order)
            if order is None:
                return None
            acted = self._advance(session, request, kind_for_order(kind, order), order, {},
                                  "", first=True)
        return _acted_plan(acted) if acted is not None else None

    def _order_for(self, session: Any, request: AnswerRequest, number: str) -> Any:
        """The order ``number`` if this shopper may see it (their own, or proven)."""
        if request.customer_id is not None:
            return order_queries.order_for_customer(
                session, request.store_id, request.customer_id, number
            )
        if number.upper() in {n.upper() for n in request.verified_orders}:
            found = order_queries.verified_guest_orders(session, request.store_id, [number])
            return found[0] if found else None
        return None

    def _propose(self, request: AnswerRequest, kind: str, order: Any) -> ActionPlan | None:
        """Start ``kind`` on ``order`` from the request's message (ask or propose)."""
        with self.db.sessions() as session:
            order = self._order_for(session, request, order.number) or order
            return self._advance(session, request, kind, order, {}, "", first=True)

    def _advance(self, session: Any, request: AnswerRequest, kind: str, order: Any,
                 params: dict[str, Any], step: str, *, first: bool = False
                 ) -> ActionPlan | None:
        """One step of an action's details (acting.ActionFlow.advance) with this
        shopper's saved payment methods and the store's products."""
        from sqlalchemy import select
        from sqlalchemy.orm import selectinload

        from chatbot.actions.service import _reference_time, get_config
        from knowledge_base.models import Customer, Product, Store

        config = get_config(self.db, request.store_id)
        policy = config.policy
        store = session.get(Store, request.store_id)
        today = _reference_time(store) if store is not None else None
        customer = None
        if request.customer_id is not None:
            customer = session.get(Customer, request.customer_id)
        elif order is not None:
            customer = order.customer

        def products(source_id: str) -> Any:
            return session.scalars(
                select(Product)
                .where(Product.store_id == request.store_id, Product.source_id == source_id)
                .options(selectinload(Product.variants))
            ).first()

        who = Who(request.store_id, request.customer_id, sorted(request.verified_orders),
                  request.conversation_key or "")
        return self.actions.advance(
            who, kind, order, customer, request.message, params, step,
            reason_required=policy.cancel_reasons is not None, products=products,
            first=first, config=config, today=today,
        )

    def plan(
        self, request: AnswerRequest, decision: Route, state: DialogueState | None = None
    ) -> Plan:
        """Pick facts or a fixed reply for ``request`` (runs in a worker thread)."""
        state = state or DialogueState()
        intent = decision.intent
        if intent is Intent.INJECTION:
            return Plan(fixed=replies.REFUSED, reason="refused")
        if intent is Intent.HANDOFF:
            return Plan(fixed=replies.HANDOFF, handoff=True, reason="asked_human")
        if intent is Intent.SMALL_TALK:
            return Plan(fixed=replies.small_talk(request.message), reason="small_talk")
        if intent is Intent.OUT_OF_SCOPE:
            return Plan(fixed=replies.OUT_OF_SCOPE, reason="out_of_scope")
        if intent is Intent.ORDER:
            return self._plan_order(request, decision)
        return self._plan_store_question(request, state)

    def _plan_store_question(self, request: AnswerRequest, state: DialogueState) -> Plan:
        """Facts for a product or policy question, with follow-ups resolved by the state."""
        message = request.message
        # "what about in M?" asks the last question again about something else; so does
        # "and Mango?" after "can I get the Forest one?" (a short message naming another
        # option value of the product in focus).
        again = bool(_WHAT_ABOUT.search(message) or self._another_option(
            request.store_id, message, state)) and bool(state.question)
        asked = f"{state.question} {message}" if again else message
        focus = _product_follow_up(message, state) or (asked != message and bool(state.product))
        focus = focus and state.last_kind != "article"
        if focus and self._names_another_product(request.store_id, message, state.product):
            # "and the men's Ridgeline rain jacket, what colours?" after the kids' jacket:
            # a new product, asked the same question.
            focus = False
        on_topic = (
            not focus
            and state.last_kind == "article"
            and bool(state.question)
            and bool(_REFERS_BACK.search(message) or _THERE.search(message) or again)
        )
        if focus and state.question and not _PRODUCT_ATTRIBUTE.search(asked):
            # "will it come back?" after "is the tent in stock?": that question's context.
            query = f"{state.question} {message}"
        elif focus:
            query = f"{state.product_title} {message}"
        elif on_topic:
            # "how much does it cost?" after "do you ship to Canada?": the same topic.
            query = f"{state.question} {message}"
        else:
            query = _query(request, state)
        if _ABROAD.search(message) and not focus:
            query = f"{query} international"
        # "what if the sole comes off?" asks what the warranty covers, not how to care for it
        defect = bool(_DEFECT.search(asked))
        policy = (bool(_POLICY_QUESTION.search(asked)) or defect) and not _STOCK_QUESTION.search(
            asked
        )
        hits = self._search(request.store_id, query, k=max(self.settings.retrieval_k, 12))
        if focus and state.product:
            hits = self._with_focus_product(request.store_id, hits, state)
            if not _PRODUCT_ATTRIBUTE.search(asked) and not _STOCK_QUESTION.search(asked):
                # "will it come back?": an article answers; the card only says what it is.
                articles = [h for h in hits if h.kind != "product"]
                hits = articles + [h for h in hits if h.kind == "product"]
        if on_topic and state.article:
            # The article the conversation is about answers first, if it has the answer.
            mine = [h for h in hits if h.id == state.article]
            hits = mine + [h for h in hits if h.id != state.article]
        # The article leading is on the policy topic the question names (code chose it).
        on_policy = False
        if policy:
            # "Return window for an unworn jacket": the policy, not the jacket's page; and
            # "can I return worn boots?": the article about returns, not boot care.
            articles = [h for h in hits if h.kind != "product"]
            topic_words = {m.group(0) for m in _POLICY_TOPIC.finditer(asked.lower())}
            topic_words |= {"warranty"} if defect else set()
            topic = {w[:4] for w in topic_words}
            # (About it: the title says so, or the text does: "We process returns within 3
            # business days" answers "how fast do you process a return?" under the title
            # "When will I get my refund?".)
            about = [
                h for h in articles
                if topic & {t[:4] for t in _words_of(f"{h.title} {h.snippet}")}
            ]
            if topic and not about:
                # The product's words drowned the rule ("Can I return hiking boots I wore on
                # a muddy hike?" finds boot care and boots): the store's article on the
                # topic itself ("return policy"), found by the topic's own words.
                words = " ".join(sorted(topic_words))
                found = self._search(request.store_id, f"{words} policy", k=8)
                about = [
                    h for h in found
                    if h.kind != "product" and topic & {t[:4] for t in _words_of(h.title)}
                ]
            hits = about + [h for h in articles if h not in about] or hits
            on_policy = bool(about)
        lead = next((h for h in hits if h.kind != "product"), None)
        titled = lead is not None and lead.id in self._named_articles(
            request.store_id, f"{query} {asked}"
        )
        if titled and lead is not None:
            # "how long would expedited take there?" after "overnight to Hawaii?": the
            # article leading, whose title names the place asked about, holds the rules
            # for that place; other articles' general rules ("expedited: 2-3 business
            # days") do not apply there and are left out.
            hits = [lead, *[h for h in hits if h.kind == "product"]]
        named = [h for h in hits if h.kind == "product" and _names_product(message, h.title)]
        if named and not policy:
            # "the men's Ridgeline rain jacket, what colours?": that product's card first.
            best = max(h.score for h in hits)
            top = dataclasses.replace(named[0], score=max(named[0].score, best))
            hits = [top, *[h for h in hits if h.id != top.id]]
        product_id = next((h.id for h in [*named, *hits[:1]] if h.kind == "product"), None)
        product = self._product(request.store_id, product_id) if product_id else None
        if product is not None and _CARE_QUESTION.search(asked):
            hits = self._same_kind_articles(request.store_id, hits, product)
        hits = hits[: self.settings.retrieval_k]
        if not hits and state.question and state.last_kind == "article" and not on_topic:
            # "what reason do I have to give?" after the cancellation policy: the topic
            # the conversation is on, before giving up.
            hits = self._search(request.store_id, f"{state.question} {message}")
            hits = [h for h in hits if h.kind != "product"][: self.settings.retrieval_k]
            if not hits and state.article:
                hits = self._article_hit(request.store_id, state.article)
        if not hits:
            return Plan(fixed=replies.NO_MATCH, handoff=True, reason="no_match")
        embedder = self._embedder()
        followed = focus or on_topic or bool(named) or titled or on_policy
        if not followed and embedder is not None and not _about(hits[0], query, embedder):
            # A weak hit on an article that is not about what was asked ("Can I bring my
            # dog into the Seattle store?" finds the store list): the next article that is
            # ("What is your customer service phone number?": the contact page, not the
            # privacy policy's "phone number"), or the article the conversation is on
            # ("and when do I get my money back?" after the cancellation policy), else code
            # hands off, rather than hoping the model says it does not know.
            about = [h for h in hits[1:] if h.kind != "product" and _about(h, query, embedder)]
            mine = (self._article_hit(request.store_id, state.article)
                    if state.article and state.last_kind == "article" else [])
            if about:
                hits = about
            elif mine and _about(mine[0], message, embedder):
                hits, on_topic = mine, True
            else:
                return Plan(fixed=replies.NO_MATCH, handoff=True, reason="no_match")
        # Only hits close to the best one: every extra line is one more thing for a
        # small model to copy from by mistake.
        close = [h for h in hits if h.score >= hits[0].score * HIT_SCORE_RATIO]
        # The sentence that answers may sit in another chunk of the same article than the
        # one retrieval matched ("can I change a processed order?" matches the item-change
        # part of "Modify pending order"; "An order can only be modified if its status is
        # 'pending'" leads the article): sentences are picked from the whole article.
        close = [h if h.kind == "product" else self._whole_article(request.store_id, h)
                 for h in close]
        # Sentences are picked for this message's own words when it has some of its own
        # ("and expedited?" picks the expedited sentence, not the overnight one).
        pick = message if _content_words(message) else query
        if _ABROAD.search(message):
            pick = f"{pick} international"
        # "how much is that one?" means the variant the conversation named, newest first.
        variant_text: str | list[str] = [*state.recent, message] if focus else asked
        wants_variant = _STOCK_QUESTION.search(asked) or _PRICE_QUESTION.search(message)
        stock = (
            stock_fact(product, variant_text) if product is not None and wants_variant else None
        )
        facts = [
            hit_fact(h, pick, 2 if i == 0 else 1, embedder=embedder, stock=stock is None)
            for i, h in enumerate(close)
        ]
        if stock is not None:
            facts = [stock, *[f for f in facts if f.id == stock.id]]
        plan = Plan(facts=facts[:MAX_HIT_FACTS])
        plan.confident = (
            hits[0].score >= CONFIDENT_SCORE
            or focus
            or on_topic
            or stock is not None
            or bool(named)  # code knows the product asked about (its name was given)
            # the phone number or email address asked for, on a page about what was asked
            or bool(facts and facts[0].kind != "product" and facts[0].sentences
                    and gives_contact_asked(message, facts[0].sentences[0]))
        )
        if product is not None:
            plan.product = (product.source_id, product.title)
        if focus:
            # The model reads "it" as the product the shopper means.
            plan.message = _name_the_product(message, state.product_title)
        elif _ABROAD.search(message):
            # "I live in Canada, is the return free for me too?" asks the international rule.
            plan.message = f"{message} (international)"
        return plan

    def _with_focus_product(
        self, store_id: int, hits: list[Hit], state: DialogueState
    ) -> list[Hit]:
        """``hits`` with the product in focus first (searched by its title if missing)."""
        mine = [h for h in hits if h.kind == "product" and h.id == state.product]
        if not mine:
            found = self._search(store_id, state.product_title, k=8)
            mine = [h for h in found if h.kind == "product" and h.id == state.product][:1]
        others = [h for h in hits if h.kind != "product"]
        if mine:
            best = max([h.score for h in hits] or [mine[0].score])
            mine = [dataclasses.replace(mine[0], score=max(mine[0].score, best))]
        return mine + others

    def _product(self, store_id: int, source_id: str) -> Any:
        from sqlalchemy import select
        from sqlalchemy.orm import selectinload

        from knowledge_base.models import Product

        with self.db.sessions() as session:
            return session.scalars(
                select(Product)
                .where(Product.store_id == store_id, Product.source_id == source_id)
                .options(selectinload(Product.variants))
            ).first()

    def _same_kind_articles(self, store_id: int, hits: list[Hit], product: Any) -> list[Hit]:
        """Drop articles about another kind of product (the down-jacket washing guide for
        a rain jacket); the product's own card stays."""
        kinds = self._kind_words(store_id)
        mine = _words_of(" ".join([product.title, product.product_type or "",
                                   " ".join(product.tags or [])]))
        articles, card = [], []
        for hit in hits:
            if hit.kind != "product":
                if not (_words_of(hit.title) & kinds) - mine:
                    articles.append(hit)
            elif hit.id == product.source_id:
                card.append(hit)
        # How to wash it is in an article about its kind, if the store has one; the
        # product's card only says what it is.
        caring = [h for h in articles if _CARE_QUESTION.search(f"{h.title} {h.snippet}")]
        return caring or articles or card

    def _whole_article(self, store_id: int, hit: Hit) -> Hit:
        """``hit`` with the text of its whole article (every chunk, headings left out)."""
        text = self._article_text(store_id, hit.id)
        return dataclasses.replace(hit, snippet=text) if text else hit

    def _article_text(self, store_id: int, source_id: str) -> str:
        """An article's body as its chunks read (markdown headings left out), or ""."""
        from sqlalchemy import select

        from knowledge_base.chunking import chunk_article
        from knowledge_base.models import Article

        with self.db.sessions() as session:
            row = session.scalars(
                select(Article).where(Article.store_id == store_id, Article.source_id == source_id)
            ).first()
            if row is None or not (row.body or "").strip():
                return ""
            return "\n\n".join(chunk.text for chunk in chunk_article(row))

    def _article_hit(self, store_id: int, source_id: str) -> list[Any]:
        """The article the conversation is about, read from the store (as a hit)."""
        from sqlalchemy import select

        from knowledge_base.models import Article
        from knowledge_base.retrieval import Hit

        with self.db.sessions() as session:
            row = session.scalars(
                select(Article).where(Article.store_id == store_id, Article.source_id == source_id)
            ).first()
            if row is None:
                return []
            return [Hit(row.kind, row.source_id, row.title, row.body,
                        self.settings.retrieval_min_score, row.url)]

    def _another_option(self, store_id: int, message: str, state: DialogueState) -> bool:
        """Whether ``message`` is a short follow-up ("and Mango?") that names an option
        value of the product the last answer was about."""
        if state.last_kind != "product" or not state.product or len(message.split()) > 4:
            return False
        if not re.match(r"\W*(and|or|what about|how about)\b", message, re.IGNORECASE):
            return False
        product = self._product(store_id, state.product)
        return product is not None and stock_fact(product, message) is not None

    def _named_articles(self, store_id: int, text: str) -> list[str]:
        """The articles whose title has a proper name that ``text`` names ("Do you ship to
        Alaska, Hawaii and Puerto Rico?" for "... to Hawaii?"), by source id. Only names
        found in one article's title count ("Northwind" in several tells none apart)."""
        said = {w.lower() for w in re.findall(r"[A-Za-z]+", text)}
        return [sid for sid, names in self._article_names(store_id).items() if names & said]

    def _article_names(self, store_id: int) -> dict[str, set[str]]:
        """Proper names (capitalised words after a title's first) of each article title
        that no other article title has, by source id; read again when the store's index
        has a new generation (like the catalogue: an import syncs it)."""
        generation = self._index_generation(store_id)
        cached = self._articles.get(store_id)
        if cached is not None and cached[0] == generation:
            return cached[1]
        from sqlalchemy import select

        from knowledge_base.models import Article

        with self.db.sessions() as session:
            rows = session.execute(
                select(Article.source_id, Article.title).where(Article.store_id == store_id)
            ).all()
        names = {sid: {w.lower() for w in re.findall(r"(?<=\s)[A-Z][a-z]{2,}", title or "")}
                 for sid, title in rows}
        seen = Counter(w for words in names.values() for w in words)
        unique = {sid: {w for w in words if seen[w] == 1} for sid, words in names.items()}
        found = {sid: words for sid, words in unique.items() if words}
        self._articles[store_id] = (generation, found)
        return found

    def _names_another_product(self, store_id: int, message: str, current: str | None) -> bool:
        """Whether ``message`` names a product of the store other than ``current``."""
        titles, _ = self._catalogue(store_id)
        return any(sid != current and _names_product(message, title) for sid, title in titles)

    def _kind_words(self, store_id: int) -> set[str]:
        """Words that name a kind of product in this store (types and tags)."""
        return self._catalogue(store_id)[1]

    def _catalogue(self, store_id: int) -> tuple[list[tuple[str, str]], set[str]]:
        """The store's product titles (by source id) and kind words, read again when the
        store's search index has a new generation (an import, in any process, syncs it), so
        a product imported while the server runs is known at its next message."""
        generation = self._index_generation(store_id)
        cached = self._catalogues.get(store_id)
        if cached is not None and cached[0] == generation:
            return cached[1], cached[2]
        from sqlalchemy import select

        from knowledge_base.models import Product

        with self.db.sessions() as session:
            rows = session.execute(
                select(Product.source_id, Product.title, Product.product_type, Product.tags)
                .where(Product.store_id == store_id)
            ).all()
        titles = [(sid, title) for sid, title, _, _ in rows]
        words: set[str] = set()
        for _, _, product_type, tags in rows:
            words |= _words_of(f"{product_type or ''} {' '.join(tags or [])}")
        words -= _KIND_GENERIC
        self._catalogues[store_id] = (generation, titles, words)
        return titles, words

    def _index_generation(self, store_id: int) -> int | None:
        """The store's committed index generation (one small read of its sidecar), or None
        without an index."""
        return self.retriever.generation(store_id) if self.retriever is not None else None

    def _plan_order(self, request: AnswerRequest, decision: Route) -> Plan:
        with self.db.sessions() as session:
            if request.customer_id is not None:
                plan = self._customer_plan(session, request, decision)
            else:
                plan = self._guest_plan(session, request, decision)
            kind = requested_kind(request.message, decision.topics)
            if kind and len(plan.orders) == 1 and plan.fixed is None and not request.for_agent:
                # "Please cancel it": code asks for what is missing, proposes the action
                # and waits for a yes.
                acted = self._advance(session, request, kind_for_order(kind, plan.orders[0]),
                                      plan.orders[0], {}, "", first=True)
                if acted is not None:
                    return _acted_plan(acted)
        if plan.facts and plan.fixed is None and {"returns", "cancel"} & set(decision.topics):
            # Return and cancel questions need the store's rule next to the order's status.
            hits = self._search(request.store_id, request.message)[:1]
            embedder = self._embedder()
            plan.facts += [hit_fact(h, request.message, 1, embedder=embedder) for h in hits]
        if decision.email:
            # The model needs the question, not the shopper's email address.
            plan.message = strip_emails(request.message)
        return plan

    def _customer_plan(self, session: Any, request: AnswerRequest, decision: Route) -> Plan:
        assert request.customer_id is not None
        store_id, customer_id = request.store_id, request.customer_id
        if decision.order_numbers:
            found = [
                order_queries.order_for_customer(session, store_id, customer_id, number)
                for number in decision.order_numbers[:2]
            ]
            if any(order is None for order in found):
                return Plan(fixed=replies.NOT_YOUR_ORDER, handoff=True, reason="order_not_found")
            return _order_facts([o for o in found if o is not None], decision.topics)
        orders = order_queries.customer_orders(session, store_id, customer_id)
        if not orders:
            return Plan(fixed=replies.NO_ORDERS, handoff=True, reason="no_orders")
        return _pick_orders(orders, request.message, decision.topics)

    def _guest_plan(self, session: Any, request: AnswerRequest, decision: Route) -> Plan:
        store_id = request.store_id
        proven = {n.upper() for n in request.verified_orders}
        numbers = decision.order_numbers
        if numbers and all(n.upper() in proven for n in numbers):
            orders = order_queries.verified_guest_orders(session, store_id, numbers)
            return _order_facts(orders, decision.topics)
        if numbers and decision.email:
            # Security hook (issue #18): attempts are limited per conversation, address,
            # email and order; a refused attempt never looks the order up.
            order, refused = guest_verification.verify(
                self.db, request, numbers[0], decision.email,
                lambda: order_queries.verify_guest_order(
                    session, store_id, numbers[0], decision.email or ""),
            )
            if refused is not None:
                return Plan(fixed=guest_verification.LOCKED_REPLY, handoff=True,
                            reason="verify_locked")
            if order is None:
                return Plan(fixed=replies.VERIFY_FAILED, handoff=True, reason="verify_failed")
            plan = _order_facts([order], decision.topics)
            plan.verified = frozenset({order.number})
            return plan
        if numbers:
            return Plan(fixed=replies.VERIFY_NEED_EMAIL, reason="verify_needed")
        if proven:
            orders = order_queries.verified_guest_orders(session, store_id, sorted(proven))
            if orders:
                return _pick_orders(orders, request.message, decision.topics)
        if decision.email:
            return Plan(fixed=replies.VERIFY_NEED_NUMBER, reason="verify_needed")
        return Plan(fixed=replies.VERIFY_REQUEST, reason="verify_needed")

    def _search(self, store_id: int, query: str, k: int | None = None) -> list[Hit]:
        """Retrieval hits at or above ``retrieval_min_score``; syncs the index on first use."""
        if self.retriever is None or not query.strip():
            return []
        self._ensure_synced(store_id)
        hits = self.retriever.search(store_id, query, k=k or self.settings.retrieval_k)
        return [h for h in hits if h.score >= self.settings.retrieval_min_score]

    def _embedder(self) -> Any:
        """The retriever's sentence embedder (ranks an article's sentences), if it has one."""
        return getattr(self.retriever, "embedder", None)

    def _ensure_synced(self, store_id: int) -> None:
        if store_id in self._synced or self.retriever is None:
            return
        with self._sync_lock:
            if store_id not in self._synced:
                self.retriever.sync(store_id)
                self._synced.add(store_id)

    # -- saying it (async: streaming) -------------------------------------------------

    async def _fixed(self, text: str, plan: Plan) -> AsyncGenerator[ReplyEvent, None]:
        for piece in _words(text):
            yield ReplyToken(piece)
        yield ReplyDone(
            text=text,
            sources=list(plan.sources),
            handoff=plan.handoff,
            verified_orders=plan.verified,
            reason=plan.reason,
            action=plan.acted.action if plan.acted is not None else None,
            handoff_note=plan.handoff_note,
        )

    async def _generate(
        self, request: AnswerRequest, plan: Plan, state: DialogueState | None = None
    ) -> AsyncGenerator[ReplyEvent, None]:
        from chatbot.engine.engine import GenerationRequest

        state = state or DialogueState()
        message = plan.message or request.message
        # No earlier turns in the prompt: a small model copies an earlier reply instead of
        # answering (docs/answering.md, "Dialogue state"). Follow-ups were resolved by code.
        prompt_ids, kept = build_prompt_ids(self.engine.tokenizer, plan.facts, message, ())
        generation = GenerationRequest(
            prompt_ids=prompt_ids,
            max_new_tokens=self.settings.max_new_tokens,
            temperature=0.0,
            seed=request.seed,
            stop=STOP,
            cache_key=request.conversation_key,
        )
        same_question = normalise(request.message) == normalise(state.last_message)
        ctx = ClaimContext(
            kept,
            # The question as code resolved it ("it" named, "(international)" for a shopper
            # abroad): the answer sentence is picked for that.
            message,
            grounded=plan.confident,
            previous_reply="" if same_question else state.last_reply,
            embedder=self._embedder(),
        )
        guard = SentenceGuard(ctx)
        pieces = self.engine.stream(generation)
        try:
            async for piece in pieces:
                safe = guard.feed(piece)
                if safe:
                    # A checked sentence goes out word by word at about the model's own pace,
                    # so the shopper still sees it stream (docs/answering.md, "Claim guard").
                    for word in _words(safe):
                        yield ReplyToken(word)
                        await asyncio.sleep(WORD_PACE_S)
        finally:
            # Stop generating at once when the shopper goes away mid-reply.
            aclose = getattr(pieces, "aclose", None)
            if aclose is not None:
                await aclose()
        tail = guard.finish()
        if tail:
            for word in _words(tail):
                yield ReplyToken(word)
                await asyncio.sleep(WORD_PACE_S)
        self.stats.generated += 1
        if guard.fired:
            self.stats.guard_fired += guard.fired
            self.stats.replies_guarded += 1
            self.stats.guard_reasons.update(guard.reasons)
            log.debug("claim guard replaced %d sentence(s): %s", guard.fired, guard.removed)
        text = guard.text.strip()
        if not _has_content(text):
            # Nothing usable came out: say the code's own answer rather than nothing.
            fallback = guard.fallback() or replies.fact_summary(kept[0])
            prefix = " " if text else ""
            for piece in _words(prefix + fallback):
                yield ReplyToken(piece)
            text = (text + prefix + fallback).strip()
        used = facts_used(text, kept) or kept[:1]
        declined = not plan.confident and bool(REFUSAL.search(text))
        yield ReplyDone(
            text=text,
            sources=[] if declined else [fact.source() for fact in used],
            handoff=declined,
            verified_orders=plan.verified,
            guard_fired=guard.fired,
            guard_reasons=tuple(guard.reasons.elements()),
            reason="no_answer" if declined else plan.reason,
        )


def _about(hit: Hit, question: str, embedder: Any) -> bool:
    """Whether article ``hit`` is about what ``question`` asks: a strong hit is; a weak one
    (below ``ABOUT_SCORE``) is when one of its sentences means nearly what the question
    asks (``ABOUT_SIMILARITY``) or it has every word of the question that carries a topic.

    Measured with bench/answer_about.py (bench/results/answer_about.json): code hands off
    5 of 300 answerable questions with the rule against 3 without it (the two more:
    "customer service email address", whose best hit is the password page, and "I need to
    check your reimbursement policy") and 57 of 79 unanswerable ones against 45.
    """
    if hit.kind == "product" or hit.score >= ABOUT_SCORE:
        return True  # (a product card says what the product is; see CONFIDENT_SCORE)
    text = f"{hit.title} {hit.snippet}"
    if not topic_stems(question) - topic_stems(text):
        return True
    return sentence_similarity(embedder, text, question) >= ABOUT_SIMILARITY


def _order_facts(orders: Sequence[Order], topics: Iterable[str]) -> Plan:
    return Plan(facts=[order_fact(order, topics) for order in orders], orders=list(orders))


def _acted_plan(acted: ActionPlan) -> Plan:
    """An action's fixed reply as a plan (the order it is about is its source)."""
    sources = (
        [Source(kind="order", id=acted.sources_order, title=f"Order {acted.sources_order}")]
        if acted.sources_order
        else []
    )
    return Plan(fixed=acted.text, reason=acted.reason, handoff=acted.handoff,
                sources=sources, acted=acted)


def _starts_over(message: str, decision: Route, state: DialogueState, number: str) -> bool:
    """Whether a message sent while an action waits for a detail is a new request (another
    order, or another kind of action) rather than the answer."""
    named = [n for n in decision.order_numbers if n.upper() != number.upper()]
    if named:
        return True
    if state.action_step in ("payment", "refund", "address", "variant"):
        return False  # "use my PayPal", "the blue one": answers, not requests
    kind = requested_kind(message)
    if kind is None:
        return False
    same = {state.action_kind}
    if state.action_kind in ("exchange_items", "modify_order_items"):
        same.add("change_items")
    return kind not in same


def replies_declined() -> str:
    from chatbot.answering.acting import DECLINED

    return DECLINED


_WORD = re.compile(r"[a-z]+")


def _stem(word: str) -> str:
    return word[:-1] if word.endswith("s") and len(word) > 3 else word


def _pick_orders(orders: Sequence[Order], message: str, topics: Sequence[str]) -> Plan:
    """The order(s) a question without an order number most likely means.

    One order: that one. Several: those whose items the message names ("return the
    shoes"), else those in a state the topic fits (tracking -> not yet delivered,
    returns -> delivered). Still several: list them and ask which one.
    """
    if len(orders) == 1:
        return _order_facts(orders, topics)
    words = {_stem(w) for w in _WORD.findall(message.lower()) if len(w) > 2}
    named = [
        o
        for o in orders
        if any(_stem(w) in words for i in o.items for w in _WORD.findall(i.name.lower()))
    ]
    candidates = named or _by_topic(orders, topics) or list(orders)
    if len(candidates) == 1:
        return _order_facts(candidates, topics)
    listed = [order_summary_fact(o) for o in candidates[:MAX_LISTED_ORDERS]]
    return Plan(
        fixed=replies.choose_order(listed),
        sources=[fact.source() for fact in listed],
        reason="choose_order",
    )


def _item_words(order: Order) -> set[str]:
    return {
        _stem(w) for item in order.items for w in _WORD.findall(item.name.lower()) if len(w) > 2
    }


def _by_topic(orders: Sequence[Order], topics: Sequence[str]) -> list[Order]:
    if "returns" in topics:
        return [o for o in orders if o.status.lower().startswith("delivered")]
    if "tracking" in topics:
        done = ("delivered", "cancelled", "returned")
        return [o for o in orders if not o.status.lower().startswith(done)]
    return []


def _query(request: AnswerRequest, state: DialogueState | None = None) -> str:
    """The retrieval query: the message, plus the last topical question for short
    follow-ups ("and expedited?" after "how much is overnight shipping?")."""
    message = request.message.strip()
    fragment = bool(_FRAGMENT.search(message))
    if not fragment and (
        len(message.split()) >= 5 or len(_content_words(message) - _QUESTION_WORDS) >= 2
    ):
        return message  # it says what it is about ("are returns free?")
    if state is not None and state.question and normalise(state.question) != normalise(message):
        return f"{state.question} {message}"
    earlier = [t.text for t in request.history if t.role == "shopper" and t.text.strip() != message]
    return f"{earlier[-1]} {message}" if earlier else message


# Questions about the store's rules, even when they name a product.
_POLICY_QUESTION = re.compile(
    r"\b(return\w*|refund\w*|exchang\w*|warrant\w*|guarantee|polic\w+|window|ship(ping)?|"
    r"deliver\w*|cancel\w*|price match|gift card|promo|discount)\b",
    re.IGNORECASE,
)
_STOCK_QUESTION = re.compile(
    r"\b(in stock|stock|available|availability|sold out|left|have (it|them|any)|"
    r"can i (get|buy|order)|right now|which sizes|what sizes)\b",
    re.IGNORECASE,
)
# Policies whose own article should answer before any other ("return" -> Return policy).
_POLICY_TOPIC = re.compile(r"\b(return\w*|refund\w*|exchang\w*|warrant\w*|guarantee|cancel\w*)")
# Something broke: the warranty answers ("the sole comes off", "the zipper broke").
_DEFECT = re.compile(
    r"\b(comes? off|came off|coming off|f[ae]ll apart|falls apart|falling apart|broke|broken|"
    r"breaks|defect\w*|faulty|stopped working|not working|ripped|torn|peel(s|ed|ing)|"
    r"delaminat\w*|cracked|wore out|worn out)\b",
    re.IGNORECASE,
)
# A shopper abroad: the store's international rules apply (shipping, returns, duties).
_ABROAD = re.compile(
    r"\b(canada|canadian|uk|united kingdom|britain|england|europe|eu|germany|france|spain|"
    r"italy|ireland|netherlands|norway|switzerland|australia|new zealand|japan|abroad|"
    r"overseas|outside the us)\b",
    re.IGNORECASE,
)
_PRICE_QUESTION = re.compile(r"\b(how much|price|cost|costs|expensive|cheap)\b", re.I)
_CARE_QUESTION = re.compile(
    r"\b(wash\w*|clean\w*|care|dry\w*|dryer|iron\w*|bleach|re-?proof\w*|store it|"
    r"machine|detergent)\b",
    re.IGNORECASE,
)
_PRODUCT_ATTRIBUTE = re.compile(
    r"\b(colou?rs?|sizes?|stock|available|price|cost|how much|material|made of|weigh\w*|"
    r"waterproof|warm\w*|fit|wash\w*|care|clean|dry|pockets?|hood|long|big|small|options?|"
    r"come in|versions?)\b",
    re.IGNORECASE,
)
_REFERS_BACK = re.compile(
    r"\b(it|its|it's|they|them|their|this one|that one|the same one|"
    r"the (?:[a-z]+ ){0,2}one|this|that)\b",
    re.IGNORECASE,
)
# An action on an item named with "a"/"an"/"any": a question about the rule, not a request
# about the order in focus ("can I exchange a watch for headphones?").
_ANY_ITEM = re.compile(r"\b(exchange|return|swap|switch|change|cancel)\s+(a|an|any)\b", re.I)
_MINE = re.compile(r"\b(it|its|them|this|that|these|those|my|mine)\b", re.I)
# A question about what is possible ("Can I return an order that is not delivered?").
_GENERAL_ASK = re.compile(
    r"\W*(can|could|may|do|does|is|are)\s+(i|we|you|it|an?|orders?)\b", re.IGNORECASE
)
# "there" meaning a place named before ("how long would expedited take there?"), not
# "is there ...?" / "there is ...".
_THERE = re.compile(
    r"(?<!\bis )(?<!\bare )(?<!\bwas )(?<!\bwere )\bthere\b"
    r"(?!\s+(?:is|are|was|were|be|a|an|any|some)\b)",
    re.IGNORECASE,
)
_WHAT_ABOUT = re.compile(r"^\W*(and\s+)?(what|how)\s+about\b|^\W*and\s+(in|for|the)\b", re.I)
_KIND_GENERIC = {
    "men", "women", "kids", "unisex", "jacket", "jackets", "gear", "accessory", "accessories",
    "outdoor", "everyday", "travel", "new", "sale",
}


def _product_follow_up(message: str, state: DialogueState) -> bool:
    """A message about the product in focus ("what colours does it come in?", "is the
    Storm Blue one in stock in L?"), rather than a new product or a policy question."""
    if not state.product:
        return False
    text = message.strip()
    if len(text.split()) > 14:
        return False
    if _POLICY_QUESTION.search(text) and not _PRODUCT_ATTRIBUTE.search(text):
        return False
    if _names_product(text, state.product_title):
        return True  # names it again
    if _REFERS_BACK.search(text):
        return bool(_PRODUCT_ATTRIBUTE.search(text)) or len(text.split()) <= 6
    return bool(_PRODUCT_ATTRIBUTE.search(text)) and len(text.split()) <= 6


def _names_product(message: str, title: str) -> bool:
    """Whether ``message`` names the product ``title`` (all its distinctive words)."""
    distinctive = _words_of(title) - _KIND_GENERIC - {"rain", "down", "wool"}
    return bool(distinctive) and distinctive <= _words_of(message)


def _name_the_product(message: str, title: str) -> str:
    """ "What colours does it come in?" -> "What colours does the <title> come in?"."""
    if not title:
        return message
    named, count = re.subn(
        r"\b(it|this one|that one|the (?:[a-z]+ ){0,2}one)\b", f"the {title}", message,
        count=1, flags=re.IGNORECASE,
    )
    return named if count else f"{message.rstrip()} ({title})"


def _words_of(text: str) -> set[str]:
    """Lower-case words with a plural "s" dropped ("jackets" == "jacket")."""
    return {
        w[:-1] if w.endswith("s") and len(w) > 3 else w
        for w in re.findall(r"[a-z]+", text.lower())
        if len(w) > 2
    }


def _content_words(message: str) -> set[str]:
    """The message's words that carry a topic (not "and", "what", "about", "it")."""
    return _words_of(message) - _FILLER


# "for what order amounts?", "and once it is delivered?": the rest of the last question.
_FRAGMENT = re.compile(r"^\W*(for|and|with|in|on|at|to|by|from|or|but|so|then)\b", re.I)
_QUESTION_WORDS = {"are", "can", "will", "does", "did", "was", "were", "have", "has", "get"}
_FILLER = {
    "and", "what", "about", "the", "how", "much", "does", "that", "this", "one", "for",
    "with", "can", "you", "your", "any", "there", "also", "then", "cost", "take", "long",
    "is", "it", "its", "please", "thanks", "too", "why", "when", "where", "which", "who",
}


def next_state(
    state: DialogueState, message: str, decision: Route, plan: Plan, done: ReplyDone
) -> DialogueState:
    """The dialogue state after ``done`` answered ``message`` (see dialogue.py)."""
    after = DialogueState.from_json(state.to_json())
    after.turns += 1
    after.clear_pending()
    for fact in plan.facts:
        if fact.kind == "order":
            after.focus_order(fact.id)
            after.order_topics = list(decision.topics)
            break
    if decision.intent is Intent.ORDER and decision.order_numbers and not plan.facts:
        # (An action turn about an order: "and #W6310710?" next asks the same of another.)
        after.order_topics = list(decision.topics)
    if plan.reason == "choose_order":
        after.pending = "choose_order"
    if plan.reason in ("verify_needed", "verify_failed"):
        # (After a wrong email the guest may send the right one for the same order.)
        numbers = list(decision.order_numbers)
        after.pending = "verify_email" if numbers else "verify_number"
        after.pending_orders = numbers
        after.pending_topics = [t for t in decision.topics if t != "status"]
    for number in sorted(done.verified_orders):
        after.focus_order(number)
    if plan.acted is not None:
        extra = plan.acted.extra
        if extra.get("customer_id"):
            after.customer_id = int(extra["customer_id"])
        if plan.acted.pending:
            after.pending = plan.acted.pending
            after.action_id = plan.acted.action_id
            after.action_kind = plan.acted.action_kind
            after.pending_orders = [plan.acted.sources_order] if plan.acted.sources_order else []
            after.action_step = str(extra.get("step") or "")
            after.action_params = dict(extra.get("params") or {})
            after.pending_request = str(extra.get("request") or "")
        if plan.acted.sources_order:
            after.focus_order(plan.acted.sources_order)
    if plan.product is not None:
        after.product, after.product_title = plan.product
    article = next((f for f in plan.facts if f.kind in ("faq", "policy")), None)
    if article is not None:
        after.article = article.id
    if plan.facts:
        first = plan.facts[0].kind
        after.last_kind = first if first in ("order", "product") else "article"
    topical = decision.intent in (Intent.POLICY, Intent.PRODUCT) and _content_words(message)
    if topical and len(message.split()) >= 4:
        after.question = message
    after.last_reply = done.text
    after.last_message = message
    after.recent = [*after.recent, message][-3:]
    return after


def _has_content(text: str) -> bool:
    return len(_WORD.findall(text.lower())) >= 2


def _words(text: str) -> list[str]:
    """Split a fixed reply into word-sized pieces (each keeps its leading whitespace)."""
    return re.findall(r"\s*\S+", text)


async def collect(events: AsyncIterator[ReplyEvent]) -> ReplyDone:
    """Run a reply stream to completion and return its ``ReplyDone`` (for eval and tests)."""
    done: ReplyDone | None = None
    async for event in events:
        if isinstance(event, ReplyDone):
            done = event
    if done is None:
        raise RuntimeError("reply stream ended without ReplyDone")
    return done


def build_answerer(settings: Settings, db: Database) -> Pipeline:
    """The real pipeline: MiniLM retriever over ``settings.index_dir`` and the LM engine."""
    from chatbot.engine.engine import Engine
    from knowledge_base.retrieval import Retriever

    retriever = Retriever(db, settings.index_dir)
    engine = Engine.load(settings)
    return Pipeline(db, retriever, engine, settings)
