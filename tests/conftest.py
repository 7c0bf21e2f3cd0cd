"""Shared pytest setup. Keep additions small: suites keep their fixtures in their own folders."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pg import throwaway_pg_database

# tests/transcripts/**/*.yaml are collected as transcript replay items (docs/transcripts.md).
pytest_plugins = ["chatbot.replay.pytest_plugin"]


@pytest.fixture
def pg_url() -> Iterator[str]:
    """URL of a throwaway PostgreSQL database (skips when PostgreSQL is unreachable)."""
    with throwaway_pg_database() as url:
        yield url
