"""The storage layer every other package stands on: engine and sessions, the declarative
``Base``, the Alembic migrations of every table, and time helpers.

It knows no table of its own: the store's data (``knowledge_base.models``), conversations,
agents and the rest declare their tables on :class:`~chatbot.storage.db.Base` in their own
packages, and the revisions in ``migrations/versions`` create them. Nothing here imports a
domain package (a test checks it).
"""
