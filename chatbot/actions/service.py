"""Propose, confirm, decline, approve: order actions with one transaction each.

The conversation flow calls::

    service = ActionService(db)
    proposal = service.propose(store_id, "cancel_order", {"order": "#W123", "reason": ...},
                               customer_id=..., verified_orders=[...], conversation_id=...)
    # show proposal.summary, send proposal.to_wire() in ``done.action``; on the yes:
    outcome = service.execute(proposal.id, store_id=store_id, conversation_id=...)
    # outcome.to_event() is the stored ``action`` event

``propose`` checks the policy (ActionRefused: a reason and alternatives) and stores the
preview. ``execute`` flips the proposal ``proposed`` -> ``executed`` with a conditional
UPDATE, then, in the same transaction, locks the order and customer rows, checks the
policy again on the current state and applies exactly the confirmed preview; if the
order changed in between (shipped meanwhile, another action ran, prices moved) the
proposal becomes ``failed`` with the reason and nothing else is written. A double yes,
a retry or a second process finds the proposal no longer ``proposed`` and gets
:class:`ActionIdError` (``action_used``) without acting. Every step is in the audit log.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from chatbot.actions import kinds
from chatbot.actions.kinds import ActionRefused, Context, Preview
from chatbot.actions.models import (
    AWAITING_APPROVAL,
    DECLINED,
    EXECUTED,
    EXPIRED,
    FAILED,
    PROPOSED,
    ActionAudit,
    ActionProposal,
)
from chatbot.actions.policy import (
    APPROVAL,
    IDENTIFY_SETTING,
    MODIFY_DEFAULT_ADDRESS,
    OFF,
    SETTINGS_KEY,
    ActionConfig,
    Policy,
    check_identify_by,
    check_kind,
    check_mode,
    identify_by,
    load_config,
)
from chatbot.errors import ChatbotError
from chatbot.protocol import chat
from chatbot.storage.clock import utcnow
from chatbot.storage.db import Database
from knowledge_base.models import Customer, Store
from knowledge_base.orders import number_variants

log = logging.getLogger(__name__)

ACTORS = ("bot", "agent", "customer", "system")


class ActionIdError(ChatbotError):
    """An action id that is unknown (or foreign), expired, or already used. Nothing changed.

    ``code``: ``unknown_action`` | ``action_expired`` | ``action_used``; ``outcome`` is the
    proposal's current state when it is ours (so a retry can be answered with it).
    """

    code = "unknown_action"

    def __init__(self, message: str, *, code: str, outcome: Outcome | None = None) -> None:
        super().__init__(message, code=code)
        self.outcome = outcome


@dataclass(frozen=True)
class Proposal:
    """A stored proposal: what the shopper is asked to confirm."""

    id: str
    kind: str
    status: str
    summary: str
    details: dict[str, Any]
    store_id: int
    conversation_id: str
    customer_id: int | None
    order_number: str
    expires_at: datetime
    mode: str = "auto"
    reason: str = ""

    def to_wire(self) -> dict[str, Any]:
        """The ``action`` object of a ``done`` event that proposes it."""
        return {"id": self.id, "kind": self.kind, "status": self.status,
                "summary": self.summary, "details": self.details}


@dataclass(frozen=True)
class Outcome:
    """What became of a proposal: executed, declined, failed, awaiting_approval or expired."""

    id: str
    kind: str
    status: str
    summary: str
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    # Who proposed it: "bot" (the shopper saw the card) or "agent" (a console preview).
    proposed_by: str = "bot"

    def to_event(self) -> dict[str, Any]:
        """The stored ``action`` event: its wire ``type`` and fields, built by the protocol
        (``{"type": "action", "id", "kind", "status", "summary", "reason"}``)."""
        kind, fields = chat.body(chat.ActionEvent(
            id=self.id, kind=self.kind, status=self.status, summary=self.summary,
            reason=self.reason,
        ))
        return {"type": kind, **fields}


def _outcome(p: ActionProposal, status: str | None = None, reason: str | None = None
             ) -> Outcome:
    return Outcome(id=p.public_id, kind=p.kind, status=status or p.status, summary=p.summary,
                   reason=p.reason if reason is None else reason, details=dict(p.details or {}),
                   proposed_by=p.proposed_by or "bot")


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _reference_time(store: Store) -> datetime | None:
    """A store's fixed "today" (``settings.reference_time``, the demo store's), if any."""
    raw = (store.settings or {}).get("reference_time")
    try:
        return datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        return None


def _same_number(a: str, b: str) -> bool:
    return bool(set(v.upper() for v in number_variants(a))
                & set(v.upper() for v in number_variants(b)))


class ActionService:
    """Order actions for every store in one database. Thread- and process-safe."""

    def __init__(self, db: Database, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.clock = clock

    # --- propose ---------------------------------------------------------------------

    def propose(
        self,
        store_id: int,
        kind: str,
        params: dict[str, Any],
        *,
        customer_id: int | None = None,
        verified_orders: Sequence[str] = (),
        conversation_id: str = "",
        actor: str = "bot",
        actor_id: str = "",
    ) -> Proposal:
        """Check ``kind`` with ``params`` for this customer and store a proposal.

        ``customer_id`` is the verified (signed-in or identified) customer; a guest passes
        the order numbers it proved instead (``verified_orders``). Raises ActionRefused
        (with ``reason``, ``alternatives`` and ``code``) when the policy, the store's
        settings or the verification say no; the refusal is audited and nothing else is
        written.
        """
        check_kind(kind)
        verified = [str(n) for n in verified_orders]
        number = str((params or {}).get("order") or "") if isinstance(params, dict) else ""
        try:
            clean = kinds.normalize_params(kind, params)
            with self.db.transaction() as session:
                store = self._store(session, store_id)
                config = load_config(store.settings)
                mode = config.mode(kind)
                if mode == OFF:
                    raise ActionRefused(
                        "I can't do that in this chat for this store.",
                        alternatives=["a member of our team can help: ask for a human agent"],
                        code="action_off",
                    )
                ctx = self._context(session, store_id, config, kind, clean, customer_id,
                                    verified, lock=False)
                ctx.today = _reference_time(store)
                preview = kinds.check(ctx, kind, clean)
                now = self.clock()
                row = ActionProposal(
                    store_id=store_id, conversation_id=conversation_id,
                    customer_id=customer_id, verified_orders=verified,
                    order_number=preview.order_number, kind=kind, params=clean,
                    summary=preview.summary, details=preview.details, status=PROPOSED,
                    proposed_by=actor, created_at=now,
                    expires_at=now + timedelta(minutes=config.policy.proposal_ttl_minutes),
                )
                session.add(row)
                session.flush()
                self._audit(session, row, actor=actor, actor_id=actor_id, event="proposed",
                            policy={"allowed": True, "mode": mode},
                            customer=ctx.customer)
                return Proposal(
                    id=row.public_id, kind=kind, status=PROPOSED, summary=row.summary,
                    details=dict(row.details), store_id=store_id,
                    conversation_id=conversation_id, customer_id=customer_id,
                    order_number=row.order_number, expires_at=row.expires_at, mode=mode,
                )
        except ActionRefused as refusal:
            with self.db.transaction() as session:
                session.add(ActionAudit(
                    store_id=store_id, conversation_id=conversation_id, actor=actor,
                    actor_id=actor_id, event="refused", kind=kind, order_number=number,
                    customer=self._customer_ref(session, customer_id),
                    policy={"allowed": False, "code": refusal.code, "reason": refusal.reason,
                            "alternatives": refusal.alternatives},
                    summary=refusal.reason, created_at=self.clock(),
                ))
            raise

    # --- the shopper's answer ----------------------------------------------------------

    def execute(
        self,
        action_id: str,
        *,
        store_id: int,
        conversation_id: str | None = None,
        actor: str = "customer",
        actor_id: str = "",
        mode: str | None = None,
    ) -> Outcome:
        """The shopper's yes: run the proposal (or hand it to an agent in ``approval`` mode).

        ``conversation_id`` (when given) must be the proposal's. ``mode`` overrides the
        store's setting (the τ replay runs everything ``auto``). Raises ActionIdError for
        an unknown, foreign, expired or already-used id; a policy failure at execution is
        an Outcome with status ``failed`` and the reason.
        """
        error: ActionIdError | None = None
        with self.db.transaction() as session:
            p = self._load(session, action_id, store_id, conversation_id)
            error = self._usable(session, p, actor, actor_id)
            if error is None:
                config = load_config(self._store(session, store_id).settings)
                effective = mode or config.mode(p.kind)
                if effective == OFF:
                    return self._finish(session, p, PROPOSED, FAILED, actor, actor_id,
                                        "This action has been turned off for the store.",
                                        policy={"allowed": False, "mode": OFF})
                if effective == APPROVAL:
                    if not self._claim(session, p, PROPOSED, AWAITING_APPROVAL, actor, actor_id):
                        error = self._used(session, p)
                    else:
                        self._audit(session, p, actor=actor, actor_id=actor_id,
                                    event=AWAITING_APPROVAL,
                                    policy={"allowed": True, "mode": APPROVAL})
                        return _outcome(p, AWAITING_APPROVAL,
                                        "A member of our team will review it shortly.")
                elif not self._claim(session, p, PROPOSED, EXECUTED, actor, actor_id):
                    error = self._used(session, p)
                else:
                    return self._run(session, p, config, actor, actor_id, effective)
        assert error is not None
        raise error

    def decline(self, action_id: str, *, store_id: int, conversation_id: str | None = None,
                actor: str = "customer", actor_id: str = "") -> Outcome:
        """The shopper's no: the proposal becomes ``declined`` and nothing else changes."""
        error: ActionIdError | None = None
        with self.db.transaction() as session:
            p = self._load(session, action_id, store_id, conversation_id)
            error = self._usable(session, p, actor, actor_id)
            if error is None:
                if self._claim(session, p, PROPOSED, DECLINED, actor, actor_id):
                    self._audit(session, p, actor=actor, actor_id=actor_id, event=DECLINED)
                    return _outcome(p, DECLINED, "")
                error = self._used(session, p)
        raise error

    # --- agents ----------------------------------------------------------------------

    def approve(self, action_id: str, *, store_id: int, agent: str) -> Outcome:
        """An agent approves a proposal awaiting approval: checked again, then executed."""
        with self.db.transaction() as session:
            p = self._load(session, action_id, store_id, None)
            if p.status == AWAITING_APPROVAL and self._claim(
                    session, p, AWAITING_APPROVAL, EXECUTED, "agent", agent):
                config = load_config(self._store(session, store_id).settings)
                return self._run(session, p, config, "agent", agent, APPROVAL)
            error = self._not_awaiting(session, p)
        raise error

    def reject(self, action_id: str, *, store_id: int, agent: str, reason: str = "") -> Outcome:
        """An agent rejects a proposal awaiting approval: ``declined``, with the reason."""
        with self.db.transaction() as session:
            p = self._load(session, action_id, store_id, None)
            text = reason.strip() or "A member of our team did not approve this request."
            if p.status == AWAITING_APPROVAL and self._claim(
                    session, p, AWAITING_APPROVAL, DECLINED, "agent", agent, text):
                self._audit(session, p, actor="agent", actor_id=agent, event="rejected",
                            policy={"allowed": False, "mode": APPROVAL, "reason": text})
                return _outcome(p, DECLINED, text)
            error = self._not_awaiting(session, p)
        raise error

    # --- reading and housekeeping -------------------------------------------------------

    def get(self, action_id: str, *, store_id: int) -> Proposal:
        with self.db.session() as session:
            p = self._load(session, action_id, store_id, None)
            return self._proposal(p)

    def awaiting_approval(self, store_id: int) -> list[Proposal]:
        """Proposals an agent has to approve or reject, oldest first."""
        with self.db.session() as session:
            rows = session.scalars(
                select(ActionProposal).where(ActionProposal.store_id == store_id,
                                             ActionProposal.status == AWAITING_APPROVAL)
                .order_by(ActionProposal.id)
            )
            return [self._proposal(p) for p in rows]

    def of_conversation(self, store_id: int, conversation_id: str) -> list[Proposal]:
        """A conversation's proposals with their status, oldest first."""
        with self.db.session() as session:
            rows = session.scalars(
                select(ActionProposal).where(ActionProposal.store_id == store_id,
                                             ActionProposal.conversation_id == conversation_id)
                .order_by(ActionProposal.id)
            )
            return [self._proposal(p) for p in rows]

    def expire_due(self, *, store_id: int | None = None) -> int:
        """Mark proposals past their expiry as ``expired``; returns how many. (The server
        expires them with their ``action`` event: ``ActionDesk.expire_due``.)"""
        count = 0
        for action_id, _, _ in self.due_for_expiry(store_id=store_id):
            with self.db.transaction() as session:
                count += self.expire_in(session, action_id) is not None
        return count

    def due_for_expiry(self, *, store_id: int | None = None, limit: int = 500
                       ) -> list[tuple[str, int, str]]:
        """``(action id, store id, conversation id)`` of proposals past their expiry that
        are still ``proposed``, oldest first."""
        query = (select(ActionProposal.public_id, ActionProposal.store_id,
                        ActionProposal.conversation_id)
                 .where(ActionProposal.status == PROPOSED,
                        ActionProposal.expires_at <= self.clock())
                 .order_by(ActionProposal.id).limit(limit))
        if store_id is not None:
            query = query.where(ActionProposal.store_id == store_id)
        with self.db.session() as session:
            return [(str(a), int(b), str(c or "")) for a, b, c in session.execute(query)]

    def expire_in(self, session: Session, action_id: str) -> Outcome | None:
        """Expire one proposal past its expiry, in the caller's transaction (so its
        ``action`` event can be stored in the same one); None when it is not due, or no
        longer ``proposed`` (answered meanwhile, or expired by another process)."""
        p = session.execute(
            select(ActionProposal).where(ActionProposal.public_id == action_id)
            .execution_options(populate_existing=True)
        ).scalars().first()
        if p is None or p.status != PROPOSED or p.expires_at > self.clock():
            return None
        if not self._claim(session, p, PROPOSED, EXPIRED, "system", "", "The offer expired."):
            return None
        self._audit(session, p, actor="system", event=EXPIRED,
                    policy={"allowed": False, "reason": "expired"})
        return _outcome(p, EXPIRED, "The offer expired.")

    # --- internals -------------------------------------------------------------------

    def _store(self, session: Session, store_id: int) -> Store:
        store = session.get(Store, store_id)
        if store is None:
            raise ChatbotError(f"no store with id {store_id}", code="unknown_store")
        return store

    def _customer_ref(self, session: Session, customer_id: int | None) -> str:
        if customer_id is None:
            return ""
        customer = session.get(Customer, customer_id)
        return customer.source_id if customer is not None else ""

    def _context(self, session: Session, store_id: int, config: ActionConfig, kind: str,
                 params: dict[str, Any], customer_id: int | None, verified: Sequence[str],
                 *, lock: bool) -> Context:
        """Load (and lock) the order and customer the action touches, checking ownership."""
        customer = None
        if customer_id is not None:
            query = select(Customer).where(Customer.id == customer_id,
                                           Customer.store_id == store_id)
            if lock:
                query = query.with_for_update()
            customer = session.execute(
                query.execution_options(populate_existing=True)).scalars().first()
            if customer is None:
                raise ActionRefused("I couldn't find your account.", code="not_verified")
        if kind == MODIFY_DEFAULT_ADDRESS:
            if customer is None:
                raise ActionRefused(
                    "Please sign in first: only a signed-in customer can change the default "
                    "address.", code="not_verified")
            return Context(session, store_id, config.policy, None, customer, self.clock())
        if customer is None and not verified:
            raise ActionRefused(
                "Please verify first: tell me the order number and the email address used at "
                "checkout.", code="not_verified")
        number = params["order"]
        order = kinds.find_order(session, store_id, number, lock=lock)
        owned = order is not None and (
            (customer is not None and order.customer_id == customer.id)
            or any(_same_number(order.number, v) for v in verified)
        )
        if order is None or not owned:
            # "Someone else's" and "does not exist" read the same on purpose.
            raise ActionRefused(
                f"I can't find order {number} among your orders.",
                alternatives=["check the order number"], code="order_not_found")
        owner = customer if customer is not None and order.customer_id == customer.id else None
        if owner is None and order.customer_id is not None:
            query = select(Customer).where(Customer.id == order.customer_id)
            if lock:
                query = query.with_for_update()
            owner = session.execute(
                query.execution_options(populate_existing=True)).scalars().first()
        return Context(session, store_id, config.policy, order, owner, self.clock())

    def _load(self, session: Session, action_id: str, store_id: int,
              conversation_id: str | None) -> ActionProposal:
        p = None
        if isinstance(action_id, str) and action_id:
            p = session.execute(
                select(ActionProposal).where(ActionProposal.public_id == action_id)
                .execution_options(populate_existing=True)
            ).scalars().first()
        # Another store's or another conversation's proposal reads as unknown.
        if p is None or p.store_id != store_id or (
                conversation_id is not None and p.conversation_id != conversation_id):
            raise ActionIdError("unknown action id", code="unknown_action")
        return p

    def _usable(self, session: Session, p: ActionProposal, actor: str, actor_id: str
                ) -> ActionIdError | None:
        """None when ``p`` can still be answered; else the error (expiring it if due)."""
        if p.status != PROPOSED:
            return self._used(session, p)
        if p.expires_at <= self.clock():
            if self._claim(session, p, PROPOSED, EXPIRED, "system", "", "The offer expired."):
                self._audit(session, p, actor="system", event=EXPIRED,
                            policy={"allowed": False, "reason": "expired"})
                # Commit the expiry; the caller raises after the transaction.
                return ActionIdError("this action has expired", code="action_expired",
                                     outcome=_outcome(p, EXPIRED, "The offer expired."))
            return self._used(session, p)
        return None

    def _used(self, session: Session, p: ActionProposal) -> ActionIdError:
        session.refresh(p)
        if p.status == EXPIRED:
            return ActionIdError("this action has expired", code="action_expired",
                                 outcome=_outcome(p))
        return ActionIdError(f"this action was already answered ({p.status})",
                             code="action_used", outcome=_outcome(p))

    def _not_awaiting(self, session: Session, p: ActionProposal) -> ActionIdError:
        session.refresh(p)
        return ActionIdError(f"this action is not awaiting approval ({p.status})",
                             code="action_used", outcome=_outcome(p))

    def _claim(self, session: Session, p: ActionProposal, old: str, new: str, actor: str,
               actor_id: str, reason: str | None = None) -> bool:
        """The conditional status flip every transition goes through (rowcount 1 = ours)."""
        values: dict[str, Any] = {"status": new, "decided_at": self.clock(),
                                  "decided_by": f"{actor}:{actor_id}" if actor_id else actor}
        if reason is not None:
            values["reason"] = reason
        result = session.execute(
            update(ActionProposal)
            .where(ActionProposal.id == p.id, ActionProposal.status == old)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return False
        for key, value in values.items():
            setattr(p, key, value)
        session.flush()
        return True

    def _finish(self, session: Session, p: ActionProposal, old: str, status: str, actor: str,
                actor_id: str, reason: str, *, policy: dict[str, Any]) -> Outcome:
        if not self._claim(session, p, old, status, actor, actor_id, reason):
            raise self._used(session, p)
        self._audit(session, p, actor=actor, actor_id=actor_id, event=status, policy=policy)
        return _outcome(p, status, reason)

    def _run(self, session: Session, p: ActionProposal, config: ActionConfig, actor: str,
             actor_id: str, mode: str) -> Outcome:
        """Re-check and apply a claimed proposal (status already ``executed``)."""
        try:
            ctx = self._context(session, p.store_id, config, p.kind, dict(p.params),
                                p.customer_id, list(p.verified_orders or []), lock=True)
            ctx.today = _reference_time(self._store(session, p.store_id))
            before = kinds.snapshot(ctx.order, ctx.customer)
            preview: Preview = kinds.check(ctx, p.kind, dict(p.params))
        except ActionRefused as refusal:
            return self._fail(session, p, actor, actor_id, refusal.reason, refusal.code, mode)
        if _canon(json.loads(_canon(preview.details))) != _canon(p.details):
            return self._fail(
                session, p, actor, actor_id,
                "The order changed since this was offered, so nothing was done. New "
                "details: " + preview.summary, "changed", mode)
        kinds.apply(ctx, p.kind, dict(p.params), preview)
        session.flush()
        self._audit(session, p, actor=actor, actor_id=actor_id, event=EXECUTED,
                    before=before, after=kinds.snapshot(ctx.order, ctx.customer),
                    policy={"allowed": True, "mode": mode}, customer=ctx.customer)
        return _outcome(p, EXECUTED, "")

    def _fail(self, session: Session, p: ActionProposal, actor: str, actor_id: str,
              reason: str, code: str, mode: str) -> Outcome:
        session.execute(
            update(ActionProposal).where(ActionProposal.id == p.id)
            .values(status=FAILED, reason=reason)
            .execution_options(synchronize_session=False)
        )
        p.status, p.reason = FAILED, reason
        self._audit(session, p, actor=actor, actor_id=actor_id, event=FAILED,
                    policy={"allowed": False, "code": code, "reason": reason, "mode": mode})
        return _outcome(p, FAILED, reason)

    def _audit(self, session: Session, p: ActionProposal, *, actor: str, event: str,
               actor_id: str = "", before: dict[str, Any] | None = None,
               after: dict[str, Any] | None = None, policy: dict[str, Any] | None = None,
               customer: Customer | None = None) -> None:
        ref = customer.source_id if customer is not None else self._customer_ref(
            session, p.customer_id)
        session.add(ActionAudit(
            store_id=p.store_id, action_id=p.public_id, conversation_id=p.conversation_id,
            actor=actor, actor_id=actor_id, event=event, kind=p.kind,
            order_number=p.order_number, customer=ref, before=before, after=after,
            policy=policy or {}, summary=p.summary if event != FAILED else p.reason,
            created_at=self.clock(),
        ))

    @staticmethod
    def _proposal(p: ActionProposal) -> Proposal:
        return Proposal(
            id=p.public_id, kind=p.kind, status=p.status, summary=p.summary,
            details=dict(p.details or {}), store_id=p.store_id,
            conversation_id=p.conversation_id, customer_id=p.customer_id,
            order_number=p.order_number, expires_at=p.expires_at, reason=p.reason,
        )


# --- per-store settings and the audit log (CLI, console) -------------------------------


def get_config(db: Database, store_id: int) -> ActionConfig:
    with db.session() as session:
        store = session.get(Store, store_id)
        return load_config(store.settings if store is not None else {})


def set_modes(db: Database, store_id: int, modes: dict[str, str], *, actor: str = "agent",
              actor_id: str = "", policy: dict[str, Any] | None = None,
              identify: Sequence[str] | None = None) -> ActionConfig:
    """Set ``auto`` / ``approval`` / ``off`` for some kinds of one store, and optionally
    policy settings (``{"return_window_days": 30}``) and how shoppers are identified
    (``identify``: ``["email", "name_zip"]``, the store's ``identify_by``); validated,
    audited."""
    for kind, mode in modes.items():
        check_kind(kind)
        check_mode(mode)
    methods = check_identify_by(list(identify)) if identify is not None else None
    with db.transaction() as session:
        store = session.execute(
            select(Store).where(Store.id == store_id).with_for_update()
        ).scalars().one()
        settings = dict(store.settings or {})
        current = load_config(settings)
        old_identify = list(identify_by(settings))
        new_modes = {**current.modes, **modes}
        new_policy = Policy.from_dict({**current.policy.overrides(), **(policy or {})})
        config = ActionConfig(modes=new_modes, policy=new_policy)
        settings[SETTINGS_KEY] = config.as_settings()
        if methods is not None:
            settings[IDENTIFY_SETTING] = list(methods)
        store.settings = settings
        changes = [f"{k}={v}" for k, v in modes.items()]
        changes += [f"{k}={json.dumps(v)}" for k, v in (policy or {}).items()]
        before: dict[str, Any] = {"modes": current.modes,
                                  "policy": current.policy.overrides()}
        after: dict[str, Any] = {"modes": new_modes, "policy": new_policy.overrides()}
        if methods is not None:
            changes.append(f"{IDENTIFY_SETTING}={','.join(methods)}")
            before[IDENTIFY_SETTING] = old_identify
            after[IDENTIFY_SETTING] = list(methods)
        session.add(ActionAudit(
            store_id=store_id, actor=actor, actor_id=actor_id, event="config",
            before=before, after=after, summary=", ".join(changes), created_at=utcnow(),
        ))
        return config


def get_identify_by(db: Database, store_id: int) -> tuple[str, ...]:
    """How the store identifies a shopper who is not signed in (its ``identify_by``)."""
    with db.session() as session:
        store = session.get(Store, store_id)
        return identify_by(store.settings if store is not None else {})


def audit_log(db: Database, store_id: int, *, order: str | None = None,
              action_id: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """The store's audit lines, oldest first (optionally for one order or action)."""
    with db.session() as session:
        query = select(ActionAudit).where(ActionAudit.store_id == store_id)
        if order:
            query = query.where(ActionAudit.order_number.in_(number_variants(order)))
        if action_id:
            query = query.where(ActionAudit.action_id == action_id)
        rows = session.scalars(query.order_by(ActionAudit.id.desc()).limit(limit))
        return [
            {"time": r.created_at.isoformat(timespec="seconds"), "actor": r.actor,
             "actor_id": r.actor_id, "event": r.event, "kind": r.kind,
             "action_id": r.action_id, "conversation_id": r.conversation_id,
             "order": r.order_number, "customer": r.customer, "summary": r.summary,
             "policy": r.policy, "before": r.before, "after": r.after}
            for r in reversed(list(rows))
        ]
