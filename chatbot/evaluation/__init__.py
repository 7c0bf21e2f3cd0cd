"""``chatbot eval``: held-out questions with expected facts, scored per system.

:mod:`.questions` generates the question sets from store data (seeded),
:mod:`.metrics` scores one reply, :mod:`.runner` runs each system, :mod:`.report`
aggregates into ``bench/results/eval-<store>.json`` and a markdown table.
"""
