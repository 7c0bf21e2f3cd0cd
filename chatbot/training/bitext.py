"""Bitext customer-support utterances, used only for the phrasing of training questions.

The Bitext sample (CDLA-Sharing-1.0) lives beside the project at
``../shared/datasets/bitext_customer_support``; it is read at training time and never
committed. We take the *questions* (the ``instruction`` column) and their intent labels,
never the ``response`` column: the replies we train on are written from our own
templates over the store's facts, so the model learns to copy facts rather than the
generic Bitext answers with their ``{{Placeholder}}`` fields.
"""

from __future__ import annotations

import csv
import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from chatbot.errors import ConfigError

log = logging.getLogger(__name__)

BITEXT_CSV = "Bitext_Sample_Customer_Support_Training_Dataset.csv"

# Bitext intents -> the training category they give phrasing to.
INTENT_CATEGORY: dict[str, str] = {
    "track_order": "order_status",
    "delivery_period": "shipping",
    "delivery_options": "shipping",
    "check_refund_policy": "returns",
    "get_refund": "returns",
    "track_refund": "returns",
    "cancel_order": "cancel",
    "change_order": "cancel",
    "change_shipping_address": "address",
    "set_up_shipping_address": "address",
    "check_payment_methods": "payment",
    "payment_issue": "payment",
    "contact_human_agent": "human",
    "contact_customer_service": "human",
    "complaint": "human",
    # No store FAQ answers these; the bot should offer a person instead of inventing steps.
    "recover_password": "account",
    "delete_account": "account",
    "create_account": "account",
    "edit_account": "account",
    "switch_account": "account",
    "registration_problems": "account",
    "newsletter_subscription": "account",
    "check_invoice": "account",
    "get_invoice": "account",
    "review": "account",
    "check_cancellation_fee": "cancel",
    "place_order": "account",
}

# Order ids in Bitext utterances are 8-15 digits; we swap in the store's real numbers.
_ORDER_ID_RE = re.compile(r"\b\d{6,15}\b")


@dataclass(frozen=True)
class Utterance:
    """One Bitext question, with its order-id span replaced by ``{order}`` when it had one."""

    intent: str
    category: str
    text: str

    @property
    def needs_order(self) -> bool:
        return "{order}" in self.text


def default_bitext_dir(project_root: Path) -> Path:
    """Where the shared Bitext copy sits relative to a checkout."""
    return project_root.parent / "shared" / "datasets" / "bitext_customer_support"


def load_utterances(folder: Path) -> dict[str, list[Utterance]]:
    """Bitext questions grouped by our category; raises ConfigError when the file is missing."""
    path = folder / BITEXT_CSV
    if not path.is_file():
        raise ConfigError(f"Bitext dataset not found at {path} (pass --bitext DIR or --no-bitext)")
    grouped: dict[str, list[Utterance]] = defaultdict(list)
    seen: set[str] = set()
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            category = INTENT_CATEGORY.get(row.get("intent", ""))
            if category is None:
                continue
            text = _normalise(row.get("instruction", ""), row)
            if not text or text.lower() in seen:
                continue
            seen.add(text.lower())
            grouped[category].append(Utterance(row["intent"], category, text))
    log.info("loaded %d Bitext utterances from %s", sum(map(len, grouped.values())), path)
    return dict(grouped)


def _normalise(text: str, row: dict[str, str]) -> str:
    text = " ".join(text.split())
    if row.get("entity_type") == "order_id" and row.get("entity_value"):
        value = row["entity_value"]
        if value in text:
            return text.replace(value, "{order}", 1)
    # Other bare ids would become numbers the facts never contain: skip those rows.
    if _ORDER_ID_RE.search(text):
        return ""
    # Money amounts ("reimburse $12") are claims we cannot ground either.
    if "$" in text or re.search(r"\d", text):
        return ""
    return text
