"""Text out of token ids, piece by piece: incremental detokenizer and stop-sequence matcher.

Byte-level BPE tokens can end in the middle of a UTF-8 character, and SentencePiece
tokens change the spacing of their neighbours, so decoding tokens one at a time gives
wrong text. :class:`IncrementalDetokenizer` decodes a short window of recent tokens and
emits only the new, complete characters (never a U+FFFD fragment).

A reply's text (:func:`reply_text`) is its tokens decoded, special tokens skipped, without
a trailing incomplete character: when the last tokens stop in the middle of a UTF-8
sequence (``max_new_tokens``, end of text or a stop string cut the reply there), those
bytes are dropped, where ``tokenizer.decode`` shows a U+FFFD. Streamed pieces join to
exactly that text. Undecodable bytes *inside* a reply (more text follows them) stay a
U+FFFD, as in ``tokenizer.decode``. The decoded text cannot tell an incomplete final
sequence from an invalid one, so a reply never ends in U+FFFD: the rule is
``decode(ids).rstrip("\ufffd")``.
"""

from __future__ import annotations

from typing import Any

_REPLACEMENT = "\ufffd"


def reply_text(tokenizer: Any, ids: list[int]) -> str:
    """The text of a reply of token ids ``ids``: what the stream's pieces join to.

    Special tokens are skipped and a trailing incomplete UTF-8 sequence is dropped (see the
    module docstring); for the reply's first tokens, SentencePiece spacing may depend on the
    prompt, which this does not see.
    """
    text = tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return str(text).rstrip(_REPLACEMENT)


class IncrementalDetokenizer:
    """Turn a growing list of token ids into text pieces as soon as they are whole.

    ``prefix`` (e.g. the prompt's last few ids) gives the first generated tokens the
    context a SentencePiece tokenizer needs to decide on a leading space.
    """

    def __init__(self, tokenizer: Any, prefix: list[int] | None = None) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = list(prefix or [])[-4:]
        # ids[prefix_offset:read_offset] is the window already emitted; decoding from
        # prefix_offset keeps the context that spacing and merged bytes depend on.
        self.prefix_offset = 0
        self.read_offset = len(self.ids)
        self.text = ""

    def _decode(self, ids: list[int]) -> str:
        return str(
            self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        )

    def push(self, token_id: int) -> str:
        """Add one token; return the newly completed text (often ``""`` mid-character)."""
        self.ids.append(token_id)
        prefix_text = self._decode(self.ids[self.prefix_offset : self.read_offset])
        full_text = self._decode(self.ids[self.prefix_offset :])
        if len(full_text) <= len(prefix_text) or full_text.endswith(_REPLACEMENT):
            return ""  # an incomplete UTF-8 sequence (or a special token): wait
        new = full_text[len(prefix_text) :]
        self.prefix_offset = self.read_offset
        self.read_offset = len(self.ids)
        self.text += new
        return new

    def flush(self) -> str:
        """At the end of generation: the text still held back, less its trailing incomplete
        character (see :func:`reply_text`); a U+FFFD before that (undecodable bytes with more
        text after them) stays, as it would have when streamed."""
        rest = self._decode(self.ids[self.prefix_offset :])
        prefix_text = self._decode(self.ids[self.prefix_offset : self.read_offset])
        tail = rest[len(prefix_text) :].rstrip(_REPLACEMENT)
        self.text += tail
        self.read_offset = len(self.ids)
        return tail


class StopMatcher:
    """Find stop sequences in streamed text, even when one spans several pieces.

    ``push`` returns the text that is safe to emit: everything before a stop sequence,
    holding back a tail that could still grow into one.
    """

    def __init__(self, stops: tuple[str, ...] | list[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._hold = max((len(s) for s in self.stops), default=1) - 1
        self._buffer = ""
        self.stopped = False

    def push(self, text: str) -> str:
        """Add text; return what can be shown now. Sets ``stopped`` on a match."""
        if self.stopped:
            return ""
        if not self.stops:
            return text
        self._buffer += text
        hits = [(i, s) for s in self.stops if (i := self._buffer.find(s)) >= 0]
        if hits:
            cut = min(i for i, _ in hits)
            self.stopped = True
            out, self._buffer = self._buffer[:cut], ""
            return out
        # Keep only as much as could be the start of a stop sequence.
        keep = 0
        for n in range(min(self._hold, len(self._buffer)), 0, -1):
            tail = self._buffer[-n:]
            if any(s.startswith(tail) for s in self.stops):
                keep = n
                break
        out = self._buffer[: len(self._buffer) - keep]
        self._buffer = self._buffer[len(self._buffer) - keep :]
        return out

    def flush(self) -> str:
        """At the end of generation: the held-back tail was not a stop after all."""
        out, self._buffer = ("" if self.stopped else self._buffer), ""
        return out
