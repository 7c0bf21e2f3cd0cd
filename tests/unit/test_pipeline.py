"""The answering pipeline with a fake engine: facts in, guarded stream out, sources cited."""

from __future__ import annotations

from pathlib import Path

import pytest
from answering_support import FakeEngine, FakeTokenizer, KeywordRetriever, World, seed_world

from chatbot.answering import replies
from chatbot.answering.facts import Fact
from chatbot.answering.pipeline import Pipeline, collect
from chatbot.answering.prompt import (
    MAX_FACTS,
    SYSTEM_PROMPT,
    build_messages,
    build_prompt_ids,
)
from chatbot.types import AnswerRequest, ReplyDone, ReplyToken, Turn


@pytest.fixture()
def world(tmp_path: Path) -> World:
    return seed_world(tmp_path)


@pytest.fixture()
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture()
def retriever(world: World) -> KeywordRetriever:
    return KeywordRetriever(world.articles)


@pytest.fixture()
def pipeline(world: World, retriever: KeywordRetriever, engine: FakeEngine) -> Pipeline:
    return Pipeline(world.db, retriever, engine, world.settings)


async def test_stream_is_tokens_then_one_done(
    world: World, pipeline: Pipeline, engine: FakeEngine
) -> None:
    engine.queue("Your ", "order ", "#W10", "00001 ", "is ", "processed.")
    request = AnswerRequest(
        world.shop, "status of #W1000001", customer_id=world.alice, seed=7, conversation_key="c1"
    )
    events = [e async for e in pipeline.answer(request)]
    assert [type(e) for e in events[:-1]] == [ReplyToken] * (len(events) - 1)
    done = events[-1]
    assert isinstance(done, ReplyDone)
    assert done.text == "Your order #W1000001 is processed."
    assert done.guard_fired == 0
    generation = engine.requests[0]
    assert generation.temperature == 0.0 and generation.seed == 7
    assert generation.cache_key == "c1"


async def test_guard_removes_invented_tracking_number_and_counts_it(
    world: World, pipeline: Pipeline, engine: FakeEngine
) -> None:
    engine.queue("Your ", "tracking ", "number ", "is ", "4444", "55556666. ", "Thanks!")
    done = await collect(
        pipeline.answer(
            AnswerRequest(world.shop, "tracking for #W1000001?", customer_id=world.alice)
        )
    )
    assert "444455556666" not in done.text
    # The sentence with the made-up number is replaced by the fact's own words.
    assert done.text == (
        "Order #W1000001 is processed: tracking 357962501027 (UPS, in transit). Thanks!"
    )
    assert "(a detail" not in done.text
    assert done.guard_fired == 1
    assert pipeline.stats.guard_fired == 1 and pipeline.stats.replies_guarded == 1
    assert pipeline.stats.guard_reasons == {"number": 1}


async def test_empty_model_reply_falls_back_to_the_fact(
    world: World, pipeline: Pipeline, engine: FakeEngine
) -> None:
    engine.queue("")
    done = await collect(
        pipeline.answer(AnswerRequest(world.shop, "status #W1000001", customer_id=world.alice))
    )
    assert done.text == "Order #W1000001 is processed."


async def test_handoff_request(world: World, pipeline: Pipeline, engine: FakeEngine) -> None:
    done = await collect(pipeline.answer(AnswerRequest(world.shop, "can I talk to a human?")))
    assert done.text == replies.HANDOFF and done.handoff and done.reason == "asked_human"
    assert engine.requests == []


async def test_no_match_says_so_and_offers_handoff(
    world: World, pipeline: Pipeline, engine: FakeEngine
) -> None:
    done = await collect(pipeline.answer(AnswerRequest(world.shop, "do you repair bicycles?")))
    assert done.text == replies.NO_MATCH and done.handoff and done.reason == "no_match"
    assert engine.requests == []


async def test_policy_answer_cites_the_article_it_used(
    world: World, pipeline: Pipeline, engine: FakeEngine, retriever: KeywordRetriever
) -> None:
    engine.queue("Delivered ", "items ", "can ", "be ", "returned ", "within ", "30 ", "days.")
    done = await collect(
        pipeline.answer(AnswerRequest(world.shop, "how many days do I have for returns?"))
    )
    assert done.text == "Delivered items can be returned within 30 days."
    assert [s.id for s in done.sources] == ["returns"]
    assert done.sources[0].url == "/pages/returns"
    assert retriever.synced == [world.shop]  # synced lazily, once


async def test_small_talk_and_out_of_scope_are_fixed(world: World, pipeline: Pipeline) -> None:
    assert (
        await collect(pipeline.answer(AnswerRequest(world.shop, "hi")))
    ).text == replies.GREETING
    done = await collect(pipeline.answer(AnswerRequest(world.shop, "tell me a joke")))
    assert done.text == replies.OUT_OF_SCOPE and not done.handoff


async def test_package_question_picks_the_undelivered_order(
    world: World, pipeline: Pipeline, engine: FakeEngine
) -> None:
    await collect(
        pipeline.answer(AnswerRequest(world.shop, "where is my package?", customer_id=world.alice))
    )
    assert "[order #W1000001]" in engine.prompts[0]
    assert "#W1000002" not in engine.prompts[0]


async def test_return_question_picks_the_named_item_and_adds_the_policy(
    world: World, pipeline: Pipeline, engine: FakeEngine
) -> None:
    await collect(
        pipeline.answer(
            AnswerRequest(world.shop, "is a return possible for my shoes?",
                          customer_id=world.alice)
        )
    )
    prompt = engine.prompts[0]
    assert "[order #W1000002]" in prompt and "Running Shoes" in prompt
    assert "[policy returns]" in prompt
    assert "#W1000001" not in prompt


async def test_ambiguous_order_question_lists_the_orders(
    world: World, pipeline: Pipeline, engine: FakeEngine
) -> None:
    done = await collect(
        pipeline.answer(
            AnswerRequest(world.shop, "what's the status of my order?", customer_id=world.alice)
        )
    )
    assert done.reason == "choose_order"
    assert "#W1000001" in done.text and "#W1000002" in done.text
    assert {s.id for s in done.sources} == {"#W1000001", "#W1000002"}
    assert engine.requests == []


async def test_customer_without_orders(world: World, pipeline: Pipeline) -> None:
    done = await collect(
        pipeline.answer(AnswerRequest(world.shop, "where is my order?", customer_id=world.nobody))
    )
    assert done.text == replies.NO_ORDERS and done.handoff


async def test_follow_up_keeps_the_order_from_history(
    world: World, pipeline: Pipeline, engine: FakeEngine
) -> None:
    history = [Turn("shopper", "status of #W1000002"), Turn("bot", "Order #W1000002 is delivered.")]
    await collect(
        pipeline.answer(
            AnswerRequest(world.shop, "what did it cost?", history=history, customer_id=world.alice)
        )
    )
    assert "[order #W1000002]" in engine.prompts[0] and "$89.99" in engine.prompts[0]


async def test_stats_count_reasons(world: World, pipeline: Pipeline) -> None:
    await collect(pipeline.answer(AnswerRequest(world.shop, "hello")))
    await collect(pipeline.answer(AnswerRequest(world.shop, "agent please")))
    assert pipeline.stats.replies == 2
    assert pipeline.stats.reasons == {"small_talk": 1, "asked_human": 1}


# -- the prompt format --------------------------------------------------------------


def _fact(i: int) -> Fact:
    return Fact("faq", f"a{i}", "word " * 40, title=f"A{i}")


def test_prompt_layout_facts_before_question_system_prompt_fixed() -> None:
    history = [Turn("shopper", "hi"), Turn("bot", "Hello!"), Turn("shopper", "where is it?")]
    messages = build_messages([_fact(1)], "where is it?", history)
    assert messages[0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    last = messages[-1]["content"]
    assert last.startswith("Facts:\n[faq a1] ") and last.endswith("Question: where is it?")


def test_prompt_with_reply_is_a_training_example() -> None:
    messages = build_messages([_fact(1)], "q?", reply="answer.")
    assert messages[-1] == {"role": "assistant", "content": "answer."}


def test_prompt_budget_drops_history_then_low_ranked_facts() -> None:
    tokenizer = FakeTokenizer()
    history = [Turn("shopper", "long " * 60), Turn("bot", "long " * 60)]
    facts = [_fact(i) for i in range(6)]
    ids, kept = build_prompt_ids(tokenizer, facts, "question?", history, max_tokens=150)
    assert len(ids) <= 150
    assert "long" not in tokenizer.last_text
    assert [f.id for f in kept] == ["a0", "a1"]
    ids, kept = build_prompt_ids(tokenizer, facts, "question?", history, max_tokens=10_000)
    assert len(kept) == MAX_FACTS and "long" in tokenizer.last_text


def test_best_sentences_picks_the_ones_matching_the_question() -> None:
    from chatbot.answering.facts import best_sentences

    text = (
        "Orders ship from Denver. Standard shipping takes 5-7 business days. "
        "Express shipping costs $14.95. Gift wrap is free."
    )
    assert best_sentences(text, "how long does standard shipping take?", 1) == (
        "Standard shipping takes 5-7 business days."
    )
    assert best_sentences(text, "how much is express shipping?", 2) == (
        "Express shipping costs $14.95. Standard shipping takes 5-7 business days."
    )


def test_best_sentences_puts_the_best_match_first() -> None:
    from chatbot.answering.facts import best_sentences

    text = (
        "Orders ship within 2 days. Express delivery arrives in 1-2 days. "
        "Express shipping cost is $14.95."
    )
    # The model restates the first sentence of a line, so the best match leads even
    # when the text has it later; the runner-up follows it.
    assert best_sentences(text, "what is the express shipping cost and delivery time?", 2) == (
        "Express shipping cost is $14.95. Express delivery arrives in 1-2 days."
    )
    # No word in common: the article's lead sentence alone.
    assert best_sentences(text, "gift wrap?", 2) == "Orders ship within 2 days."


CARD = """Type: Rain Jackets. Brand: Northwind Outfitters.
A fully waterproof, breathable shell for wet hikes. Taped seams and pit zips.
Color options: Black, Slate Blue.
Size options: S, M, L, XL.
Price: $189.00.
Availability: in stock.
Tags: men, rain."""


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("How much does the rain jacket cost?", "Price: $189.00."),
        (
            "is it available in size XL?",
            "Size options: S, M, L, XL. Availability: in stock. Price: $189.00.",
        ),
        (
            "Do you sell waterproof jackets?",
            "A fully waterproof, breathable shell for wet hikes. "
            "Availability: in stock. Price: $189.00.",
        ),
    ],
)
def test_product_fact_keeps_the_card_lines_the_question_is_about(
    question: str, expected: str
) -> None:
    from answering_support import FakeHit

    from chatbot.answering.facts import hit_fact

    fact = hit_fact(FakeHit("product", "ridgeline", "Ridgeline Jacket", CARD, 0.9), question)
    assert fact.line() == f"[product ridgeline] Ridgeline Jacket: {expected}"


def test_split_sentences_keeps_a_list_with_its_lead_in() -> None:
    from chatbot.answering.facts import split_sentences

    text = (
        "We have three stores: - Portland: 1420 Lovejoy St, - Seattle: 2201 Westlake Ave, "
        "- Denver: 1650 Wazee St. Prices match the website. - Chat: any page."
    )
    assert split_sentences(text) == [
        "We have three stores: Portland: 1420 Lovejoy St; Seattle: 2201 Westlake Ave; "
        "Denver: 1650 Wazee St.",
        "Prices match the website.",
        "Chat: any page.",
    ]


def test_rare_query_words_pick_the_sentence() -> None:
    from chatbot.answering.facts import best_sentences

    text = (
        "Our support team answers every day. Support chat is on every page. Phone: 1-800-555-0142."
    )
    assert best_sentences(text, "what's your support phone number?", 1) == "Phone: 1-800-555-0142."


def test_sources_match_whole_numbers_not_fragments() -> None:
    from chatbot.answering.facts import facts_used

    jacket = Fact("product", "jacket", "Rain Jacket: Price: $149.00.")
    pants = Fact("product", "pants", "Rain Pants: Price: $99.00.")
    assert facts_used("The answer is: $149.00", [jacket, pants]) == [jacket]
    assert facts_used("It costs 149 dollars.", [pants, jacket]) == [jacket]
    assert facts_used("Hello there.", [jacket, pants]) == []


async def test_closing_the_reply_stops_the_engine_stream(
    world: World, pipeline: Pipeline, engine: FakeEngine
) -> None:
    engine.queue("Your ", "order ", "is ", "processed ", "and ", "on ", "its ", "way.")
    request = AnswerRequest(world.shop, "status of #W1000001", customer_id=world.alice)
    replies_stream = pipeline.answer(request)
    first = await anext(replies_stream)
    assert isinstance(first, ReplyToken)
    await replies_stream.aclose()  # the shopper went away mid-reply
    assert engine.closed == 1


def test_products_imported_while_serving_are_known_after_the_index_syncs(
    world: World, retriever: KeywordRetriever, pipeline: Pipeline
) -> None:
    """The catalogue words are cached per process, keyed on the store's index generation:
    an import (in any process) syncs the index, and the next message sees the new product."""
    from knowledge_base.models import Product

    def add(title: str, kind: str) -> None:
        with world.db.session() as session:
            session.add(Product(store_id=world.shop, source_id=title, title=title,
                                product_type=kind))  # fmt: skip
            session.commit()

    add("Trail Runner", "sneakers")
    retriever.sync(world.shop)
    assert "sneaker" in pipeline._kind_words(world.shop)
    add("Summit Parka", "parkas")
    assert "parka" not in pipeline._kind_words(world.shop)  # cached: the index is unchanged
    retriever.sync(world.shop)  # what an import does
    assert "parka" in pipeline._kind_words(world.shop)
