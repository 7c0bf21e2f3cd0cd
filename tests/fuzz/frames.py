"""Hypothesis strategies for hostile frames, derived from the shared protocol examples.

Every example frame in ``web_widget/protocol-examples.json`` is a seed. A drawn frame is a
seed mutated at the JSON level (a field deleted, its value swapped for another type, a huge
or odd unicode string, deep nesting, extra fields, envelope fields broken) and then,
sometimes, at the text level (truncated, a byte flipped, a lone surrogate escape, a
binary frame, plain noise). Frames stay under the server's 64 KiB frame cap; the cap
itself is tested separately.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

EXAMPLES: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "web_widget" / "protocol-examples.json").read_text(
        "utf-8"
    )
)
CHAT_SEEDS: list[dict[str, Any]] = [e["frame"] for e in EXAMPLES["client"]]
CONSOLE_SEEDS: list[dict[str, Any]] = [e["frame"] for e in EXAMPLES["console"]["client"]]
# Below the server's 64 KiB frame cap (websocket framing and the sentinel need no room).
MAX_FRAME_BYTES = 60_000
INVALID_TEXTS: list[str] = [e["text"] for e in EXAMPLES["invalid"]]

# Characters that have broken chat systems: bidi overrides, zero-width, line separators,
# NUL, emoji with modifiers, combining marks, HTML and SQL metacharacters.
ODD_TEXT = st.sampled_from(
    [
        "\u202e\u2066evil\u2069",
        "\u200b\u200d\ufeff",
        "\u2028\u2029",
        "\x00\x01\x7f",
        "👩🏽‍💻🧦" * 3,
        "e\u0301\u0301\u0301",
        "<script>alert(1)</script>",
        "'; DROP TABLE messages; --",
        "%s%n{0}${x}",
        "\\u0000",
    ]
)
TEXT = st.one_of(
    st.text(max_size=40),
    ODD_TEXT,
    # (no lone surrogates here: a text frame must be UTF-8, so no client can send them raw;
    # _text_mutation sends them JSON-escaped, and bytes frames carry invalid UTF-8)
    st.builds(
        lambda ch, n: ch * n, st.characters(exclude_categories=["Cs"]), st.integers(1000, 9000)
    ),
)


def _nested(depth: int) -> Any:
    value: Any = "deep"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)
JSON_VALUE = st.one_of(
    SCALAR,
    st.lists(SCALAR, max_size=5),
    st.dictionaries(st.text(max_size=8), SCALAR, max_size=5),
    st.integers(1, 400).map(_nested),
)
FIELD_NAMES = st.sampled_from(
    [
        "v",
        "type",
        "store",
        "id",
        "text",
        "last_seq",
        "rating",
        "reply_id",
        "active",
        "identity",
        "conversation_id",
        "resume_token",
        "new_conversation",
        "comment",
        "reason",
        "__proto__",
        "constructor",
    ]
)


@st.composite
def mutated_object(draw: st.DrawFn, seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """A seed frame with 1-4 JSON-level mutations."""
    obj = dict(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        keys = sorted(obj)
        op = draw(st.sampled_from(["delete", "swap", "add", "type", "version", "text"]))
        if op == "delete" and keys:
            obj.pop(draw(st.sampled_from(keys)))
        elif op == "swap" and keys:
            obj[draw(st.sampled_from(keys))] = draw(JSON_VALUE)
        elif op == "add":
            obj[draw(FIELD_NAMES | st.text(max_size=12))] = draw(JSON_VALUE)
        elif op == "type":
            obj["type"] = draw(
                st.sampled_from([s["type"] for s in seeds]).map(str.upper)
                | st.sampled_from([s["type"] for s in seeds])
                | TEXT
            )
        elif op == "version":
            obj["v"] = draw(st.sampled_from([0, 2, -1, "1", 1.0, True, None, 10**30]))
        elif op == "text" and keys:
            obj[draw(st.sampled_from(keys))] = draw(TEXT)
    return obj


def _text_mutation(text: str, op: str, at: int, noise: str) -> str:
    at = at % (len(text) + 1)
    if op == "truncate":
        return text[:at]
    if op == "insert":
        return text[:at] + noise + text[at:]
    if op == "lone_surrogate":
        # A JSON escape of half a surrogate pair: valid JSON, not encodable UTF-8.
        text = text.replace('"text":"', '"text":"\\ud800', 1)
        return text.replace('"store":"', '"store":"\\udfff', 1)
    if op == "duplicate_key":
        return text[:-1] + ',"type":"message"}' if text.endswith("}") else text
    if op == "nan":
        return text[:-1] + ',"last_seq":NaN,"rating":Infinity}' if text.endswith("}") else text
    return text


@st.composite
def hostile_frame(draw: st.DrawFn, seeds: list[dict[str, Any]] = CHAT_SEEDS) -> str | bytes:
    """One frame as a client could send it: text (usually JSON-ish) or binary."""
    kind = draw(st.integers(0, 24))
    if kind == 0:
        return draw(st.binary(max_size=300))
    if kind == 1:
        return draw(st.sampled_from(INVALID_TEXTS))
    if kind == 2:
        return draw(st.text(max_size=200))
    if kind < 9:
        # Well-formed frames with hostile content: every string value replaced, types kept,
        # so the session logic (not only the decoder) sees odd text.
        obj = {
            k: (draw(TEXT) if isinstance(v, str) and k not in ("v", "type") else v)
            for k, v in draw(st.sampled_from(seeds)).items()
        }
    else:
        obj = draw(mutated_object(seeds))
    text = json.dumps(obj, ensure_ascii=draw(st.booleans()), separators=(",", ":"))
    if draw(st.integers(0, 3)) == 0:
        op = draw(st.sampled_from(["truncate", "insert", "lone_surrogate", "duplicate_key", "nan"]))
        text = _text_mutation(text, op, draw(st.integers(0, 10_000)), draw(st.text(max_size=5)))
    while len(text.encode("utf-8", "surrogatepass")) > MAX_FRAME_BYTES:
        text = text[: len(text) // 2]  # several huge fields: cut (now bad JSON, still a frame)
    if kind == 3:
        return text.encode("utf-8", "surrogatepass")
    return text
