"""Fixtures of the unit suite shared by several modules (the τ store of the action tests)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chatbot.actions.tau import TauReplayer
from chatbot.storage.db import Database
from tests.unit.tau_support import TAU


@pytest.fixture(scope="session")
def tau_replayer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TauReplayer]:
    """The τ folder imported once per session (tests copy it, never change it)."""
    if not (TAU / "orders.json").exists():
        pytest.skip("no ../shared τ data")
    replayer = TauReplayer(TAU, tmp_path_factory.mktemp("tau"))
    yield replayer
    replayer.close()


@pytest.fixture()
def tau_db(tau_replayer: TauReplayer) -> Iterator[Database]:
    """A fresh copy of the imported τ store for one test."""
    database = tau_replayer.fresh()
    yield database
    database.dispose()
