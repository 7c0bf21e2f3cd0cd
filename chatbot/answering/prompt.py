"""The prompt format: one fixed system prompt, then facts, recent turns and the message.

Layout (chat messages, rendered with the model's own chat template)::

    system     SYSTEM_PROMPT                      (identical for every request: prefix cache)
    user       <older shopper turn>               (at most MAX_HISTORY_TURNS, each shortened)
    assistant  <older bot/agent turn>
    user       Facts:
               [order #W2611340] status: processed; items: ...; tracking 357962501027
               [policy returns] Returns: ...
               Question: where is my package?

Facts sit in the last user message, before the question, so earlier turns (and their
KV cache) stay byte-identical from one turn to the next. The training set is built with
the same functions (``build_messages(..., reply=...)``), so keep signatures stable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from chatbot.answering.facts import Fact, shorten
from chatbot.types import Turn

SYSTEM_PROMPT = (
    "You are the customer service assistant of an online store. "
    "Answer the customer in one or two short sentences using only the facts. "
    "Copy order numbers, tracking numbers, prices and dates exactly as written. "
    "If the facts do not answer the question, say you don't know and offer a human agent."
)

MAX_FACTS = 4
MAX_HISTORY_TURNS = 2
MAX_TURN_CHARS = 240
MAX_MESSAGE_CHARS = 600
# Prompt budget in tokens; past it, history goes first, then the lowest-ranked facts.
MAX_PROMPT_TOKENS = 360

NO_FACTS_LINE = "(no facts found)"

_ROLES = {"shopper": "user", "bot": "assistant", "agent": "assistant"}


class ChatTokenizer(Protocol):
    """The part of a Hugging Face tokenizer the prompt builder uses."""

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


def facts_block(facts: Sequence[Fact]) -> str:
    """The ``Facts:`` block: one labelled line per fact (at most ``MAX_FACTS``)."""
    lines = [fact.line() for fact in facts[:MAX_FACTS]] or [NO_FACTS_LINE]
    return "Facts:\n" + "\n".join(lines)


def user_content(facts: Sequence[Fact], message: str) -> str:
    """The final user message: facts first, then the shopper's question."""
    question = shorten(message, MAX_MESSAGE_CHARS)
    return f"{facts_block(facts)}\nQuestion: {question}"


def history_messages(
    history: Sequence[Turn], max_turns: int = MAX_HISTORY_TURNS
) -> list[dict[str, str]]:
    """The last ``max_turns`` shopper/bot/agent turns as chat messages (system turns dropped)."""
    turns = [t for t in history if t.role in _ROLES and t.text.strip()]
    if max_turns <= 0:
        return []
    messages = [
        {"role": _ROLES[t.role], "content": shorten(t.text, MAX_TURN_CHARS)}
        for t in turns[-max_turns:]
    ]
    # Chat templates expect the conversation to open with a user turn after the system.
    while messages and messages[0]["role"] != "user":
        messages.pop(0)
    return messages


def build_messages(
    facts: Sequence[Fact],
    message: str,
    history: Sequence[Turn] = (),
    *,
    reply: str | None = None,
    max_history_turns: int = MAX_HISTORY_TURNS,
) -> list[dict[str, str]]:
    """Chat messages for one request; with ``reply``, the assistant answer is appended
    (that is one supervised training example)."""
    turns = list(history)
    # Callers may pass the conversation including the message being answered.
    if turns and turns[-1].role == "shopper" and turns[-1].text.strip() == message.strip():
        turns.pop()
    messages = [{"role": "system", "content": SYSTEM_PROMPT}]
    messages += history_messages(turns, max_history_turns)
    messages.append({"role": "user", "content": user_content(facts, message)})
    if reply is not None:
        messages.append({"role": "assistant", "content": reply})
    return messages


def render(tokenizer: ChatTokenizer, messages: list[dict[str, str]], *, generation: bool) -> str:
    """The chat template applied as text (``generation`` adds the assistant header)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
    return str(text)


def encode_messages(
    tokenizer: ChatTokenizer, messages: list[dict[str, str]], *, generation: bool = True
) -> list[int]:
    """Token ids of rendered ``messages`` (the template already holds special tokens)."""
    return list(
        tokenizer.encode(
            render(tokenizer, messages, generation=generation), add_special_tokens=False
        )
    )


def build_prompt_ids(
    tokenizer: ChatTokenizer,
    facts: Sequence[Fact],
    message: str,
    history: Sequence[Turn] = (),
    *,
    max_tokens: int = MAX_PROMPT_TOKENS,
) -> tuple[list[int], list[Fact]]:
    """Prompt token ids within ``max_tokens``, and the facts that made it into the prompt.

    Shrinks in this order until it fits: drop history, then drop facts from the end
    (they arrive best first). The message and the system prompt always stay.
    """
    kept = list(facts[:MAX_FACTS])
    turns = MAX_HISTORY_TURNS
    while True:
        ids = encode_messages(
            tokenizer, build_messages(kept, message, history, max_history_turns=turns)
        )
        if len(ids) <= max_tokens:
            return ids, kept
        if turns > 0 and history:
            turns = 0
        elif len(kept) > 1:
            kept.pop()
        else:
            return ids, kept
