"""Transcript replay tests: YAML transcripts replayed against the real server and checked.

- :mod:`chatbot.replay.format`: the transcript schema and loader
- :mod:`chatbot.replay.writer`: transcripts back to YAML
- :mod:`chatbot.replay.runner`: replaying over ``/ws/chat`` and ``/ws/agent``
- :mod:`chatbot.replay.checks`: expectations and the evidence claims are checked on
- :mod:`chatbot.replay.environment`: the in-process server (real answerer, throwaway data)
- :mod:`chatbot.replay.session`: one replay run (``chatbot replay``, the pytest plugin)
- :mod:`chatbot.replay.report`: text report with per-turn diffs, JUnit XML
- :mod:`chatbot.replay.recorder`: ``chatbot transcripts export``
- :mod:`chatbot.replay.pytest_plugin`: ``tests/transcripts/**/*.yaml`` as pytest items

``docs/transcripts.md`` documents the format.
"""
