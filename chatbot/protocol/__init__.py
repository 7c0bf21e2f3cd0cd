"""The sans-I/O wire protocol: the only place that encodes and decodes socket frames.

``common`` holds the envelope (version, error and close codes), ``chat`` the shopper socket
messages (``/ws/chat``), ``agent`` the console socket messages (``/ws/agent``). See
``docs/protocol.md``.
"""

from __future__ import annotations

from chatbot.protocol.common import PROTOCOL_VERSION, CloseCode, ErrorCode

__all__ = ["PROTOCOL_VERSION", "CloseCode", "ErrorCode"]
