"""Incremental detokenization and stop-sequence matching."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_support import make_tokenizer, real_model_path

from chatbot.engine.tokens import IncrementalDetokenizer, StopMatcher, reply_text


@pytest.fixture(scope="module", params=["pulled", "tiny"])
def tok(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Both the real SmolLM2 tokenizer (when pulled) and the tiny trained one."""
    if request.param == "pulled" and not (real_model_path() / "tokenizer.json").is_file():
        pytest.skip("the model has not been pulled")
    return make_tokenizer(Path(tmp_path_factory.mktemp("tok")), tiny=request.param == "tiny")


TEXTS = [
    "Returns are accepted within 30 days.",
    "Café crème — naïve façade, 東京 ✓ 🎉 done",
    "  leading spaces and\nnew lines\n\n",
    "Order #W2611340: $1,299.99 (3 items)",
]


@pytest.mark.parametrize("text", TEXTS)
def test_pieces_join_to_the_full_decode_and_are_whole_characters(tok, text: str) -> None:  # type: ignore[no-untyped-def]
    ids = tok.encode(text, add_special_tokens=False)
    detok = IncrementalDetokenizer(tok)
    pieces = [detok.push(i) for i in ids]
    pieces.append(detok.flush())
    assert "".join(pieces) == tok.decode(ids)
    assert all("\ufffd" not in p for p in pieces)


def test_multibyte_character_is_held_until_complete(tok) -> None:  # type: ignore[no-untyped-def]
    ids = tok.encode("🎉", add_special_tokens=False)
    if len(ids) < 2:
        pytest.skip("this tokenizer has the emoji as one token")
    detok = IncrementalDetokenizer(tok)
    assert [detok.push(i) for i in ids[:-1]] == [""] * (len(ids) - 1)
    assert detok.push(ids[-1]) == "🎉"


# Characters that both tokenizers split into several byte-level tokens.
SPLIT_TEXT = "Café 東京 ✓ 🎉 ok"


def _cuts(tok, ids: list[int]) -> list[int]:  # type: ignore[no-untyped-def]
    """Lengths k at which ids[:k] ends in the middle of a character."""
    return [k for k in range(1, len(ids)) if tok.decode(ids[:k]).endswith("\ufffd")]


def test_a_reply_cut_mid_character_ends_on_the_last_whole_one(tok) -> None:  # type: ignore[no-untyped-def]
    """A reply whose last tokens stop inside a character (max_new_tokens, end of text): its
    text drops those bytes, where tokenizer.decode shows U+FFFD, and the pieces join to it."""
    ids = tok.encode(SPLIT_TEXT, add_special_tokens=False)
    cuts = _cuts(tok, ids)
    assert cuts, "the test text no longer splits a character across tokens"
    for k in cuts:
        detok = IncrementalDetokenizer(tok)
        pieces = [detok.push(i) for i in ids[:k]]
        pieces.append(detok.flush())
        decoded = tok.decode(ids[:k])
        assert "".join(pieces) == reply_text(tok, ids[:k]) == decoded.rstrip("\ufffd")
        assert reply_text(tok, ids[:k]) != decoded and SPLIT_TEXT.startswith(decoded[:-1])
        assert all("\ufffd" not in p for p in pieces)


def test_undecodable_bytes_inside_a_reply_stay_visible(tok) -> None:  # type: ignore[no-untyped-def]
    """Bytes that can never form a character (a character's tail without its lead byte),
    followed by more text: U+FFFD in the stream and the text, as in tokenizer.decode."""
    ids = tok.encode(SPLIT_TEXT, add_special_tokens=False)
    k = _cuts(tok, ids)[-1]  # ids[k:] starts inside the last split character
    reply = ids[k:]
    detok = IncrementalDetokenizer(tok)
    text = "".join(detok.push(i) for i in reply) + detok.flush()
    assert "\ufffd" in text and text.endswith(" ok")
    assert text == reply_text(tok, reply) == tok.decode(reply)


def test_prompt_prefix_gives_context_but_is_not_emitted(tok) -> None:  # type: ignore[no-untyped-def]
    prompt = tok.encode("Hello there", add_special_tokens=False)
    reply = tok.encode(" friend", add_special_tokens=False)
    detok = IncrementalDetokenizer(tok, prompt)
    assert "".join(detok.push(i) for i in reply) + detok.flush() == " friend"


def test_special_tokens_produce_no_text(tok) -> None:  # type: ignore[no-untyped-def]
    detok = IncrementalDetokenizer(tok)
    assert detok.push(tok.eos_token_id) == ""
    ids = tok.encode("ok", add_special_tokens=False)
    assert "".join(detok.push(i) for i in ids) == "ok"


def test_stop_sequence_split_across_pieces() -> None:
    m = StopMatcher(("\nShopper:",))
    out = [m.push(p) for p in ["Sure, the", " window is 30 days.\nSho", "pper: thanks"]]
    assert "".join(out) == "Sure, the window is 30 days."
    assert m.stopped
    assert m.push("more") == ""


def test_held_back_tail_is_released_when_it_is_not_a_stop() -> None:
    m = StopMatcher(("###",))
    assert m.push("a #") == "a "
    assert m.push("#b") == "##b"
    assert m.push("end #") == "end "
    assert m.flush() == "#"
    assert not m.stopped


def test_earliest_of_several_stops_wins() -> None:
    m = StopMatcher(("STOP", "<end>"))
    assert m.push("one <end> two STOP") == "one "


def test_no_stops_passes_text_through() -> None:
    m = StopMatcher(())
    assert m.push("abc") == "abc" and m.flush() == ""
