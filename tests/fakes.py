"""Test doubles shared by the test suites.

``FakeAnswerer`` is :class:`chatbot.fake_answerer.FakeAnswerer`, the one scripted answerer
the tests and ``chatbot serve`` (``CHATBOT_FAKE_ANSWERER``) share; see its module for the
scripting API (``queue``, ``pause_at``, ``fail_at``, ``release``, the counters).
"""

from __future__ import annotations

from chatbot.fake_answerer import FakeAnswerer, Script

__all__ = ["FakeAnswerer", "Script"]
