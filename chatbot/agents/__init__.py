"""Agent accounts for the support console: passwords, sessions and authorisation.

``models`` holds the tables (revision ``0003``), ``passwords`` the argon2id hashing,
``accounts`` the agent store (add, list, remove, change password, store access),
``sessions`` login / logout / session lookup with hashed tokens, and ``authz`` the
checks the console socket runs before every action.
"""
