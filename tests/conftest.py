"""Shared pytest setup. Keep additions small: suites keep their fixtures in their own folders."""

# tests/transcripts/**/*.yaml are collected as transcript replay items (docs/transcripts.md).
pytest_plugins = ["chatbot.replay.pytest_plugin"]
