"""Socket sessions without I/O: what a connection may do next, and what to answer.

``chat`` holds :class:`~chatbot.session.chat.ChatSession`, the shopper socket's state
machine (hello, resume, identity, messages, handoff); ``agent`` holds
:class:`~chatbot.session.agent.AgentSession`, the console socket's (sign-in, authorisation,
ownership, replies), with its inbox (``agent_inbox``) and order-action (``agent_actions``)
parts; ``effects`` and ``agent_effects`` are what they ask for. The server's socket classes
are the pumps around them: they read frames, perform the sessions' requests through narrow
services and write what they say to write.
"""
