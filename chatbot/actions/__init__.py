"""Order actions with the shopper's confirmation (issue #19): cancel, modify, return,
exchange, change the default address; the per-store settings, the audit log, and the
τ-bench replay used for scoring. See docs/actions.md.

The conversation flow uses :class:`chatbot.actions.service.ActionService`
(``propose`` / ``execute`` / ``decline``; ``approve`` / ``reject`` for agents).
"""
