"""Socket sessions without I/O: what a connection may do next, and what to answer.

``chat`` holds :class:`~chatbot.session.chat.ChatSession`, the shopper socket's state
machine (hello, resume, identity, messages, handoff). The server's socket classes are the
pumps around it: they read frames, perform the session's requests through narrow services
and write what it says to write.
"""
