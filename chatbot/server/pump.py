"""Running a sans-I/O session's steps: the loop both socket pumps share.

A session (:mod:`chatbot.session`) answers a frame or a live item with a generator of
effects. :func:`drive` performs them one at a time and sends each result back at the
``yield`` it came from, or throws the exception performing it raised, so the session
decides what a failed request means. A closed connection ends the steps at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Iterable
from typing import Any, TypeVar

from websockets.exceptions import ConnectionClosed

E = TypeVar("E")


async def drive(
    steps: Generator[E, Any, None] | Iterable[E], perform: Callable[[E], Awaitable[Any]]
) -> None:
    """Perform the effects of ``steps`` in order, each result (or error) sent back in."""
    gen = steps if isinstance(steps, Generator) else (e for e in steps)
    result: Any = None
    error: Exception | None = None
    while True:
        try:
            effect = gen.throw(error) if error is not None else gen.send(result)
        except StopIteration:
            return
        result, error = None, None
        try:
            result = await perform(effect)
        except ConnectionClosed:
            gen.close()
            raise
        except Exception as exc:  # thrown back in: the session decides what it means
            error = exc
