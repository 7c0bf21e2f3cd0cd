"""The answering pipeline: route a shopper's message, fetch facts, prompt, guard, cite.

No I/O of its own beyond the database sessions, retriever and engine it is given.
``Pipeline`` implements :class:`chatbot.types.Answerer`; ``build_answerer`` wires the
real parts from ``Settings``.
"""

from __future__ import annotations

__all__ = ["Pipeline", "build_answerer", "collect"]


def __getattr__(name: str) -> object:
    # Lazy: importing chatbot.answering.prompt (e.g. from training) must not pull in
    # the pipeline's heavier dependencies.
    if name in __all__:
        from chatbot.answering import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
