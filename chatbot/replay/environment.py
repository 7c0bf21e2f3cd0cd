"""Where transcripts are replayed: a running server, or one started in this process.

:class:`InProcessServer` builds a throwaway data folder (fresh SQLite database, the demo
store or the transcripts' named imports), loads the real answerer (``build_answerer``)
with greedy decoding and a fixed seed, creates a test agent for console steps, and
serves on a free port. Search indexes can be kept in a cache folder between runs, so
only the first run embeds the store (the index re-embeds only chunks whose text changed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatbot.errors import ChatbotError, ConfigError, ModelNotFoundError
from chatbot.replay.format import StoreFixture
from chatbot.settings import Limits, Settings
from chatbot.types import Answerer, AnswerRequest, ReplyEvent

log = logging.getLogger(__name__)

DEFAULT_SEED = 0
AGENT_EMAIL = "replay-agent@example.com"
AGENT_NAME = "Replay Agent"
# The runner talks from one address, faster than any shopper: per-IP limits would bite.
REPLAY_LIMITS = Limits(
    messages_per_minute_per_connection=600,
    messages_per_minute_per_ip=100_000,
    max_connections_per_ip=1000,
)


@dataclass
class Target:
    """A server to replay against, and what the runner may know about its data."""

    url: str  # ws://host:port
    db: Any = None  # chatbot.storage.db.Database: identity secrets, evidence
    agent_token: str | None = None
    identity_secret: str | None = None  # overrides the database lookup
    _secrets: dict[str, str] = field(default_factory=dict)

    @property
    def chat_url(self) -> str:
        return self.url.rstrip("/") + "/ws/chat"

    @property
    def agent_url(self) -> str:
        return self.url.rstrip("/") + "/ws/agent"

    def store_secret(self, store: str) -> str:
        """The store's identity secret, for signing a transcript's customer identity."""
        if self.identity_secret:
            return self.identity_secret
        if store in self._secrets:
            return self._secrets[store]
        if self.db is None:
            raise ConfigError(
                "signing a customer identity needs the store's secret: pass "
                "--identity-secret or a --database-url the server uses"
            )
        from sqlalchemy.exc import SQLAlchemyError

        from knowledge_base.stores import get_store

        try:
            with self.db.session() as session:
                secret = get_store(session, store).identity_secret
        except SQLAlchemyError as exc:
            raise ConfigError(
                f"cannot read store {store!r} from the database to sign an identity ({exc})"
            ) from exc
        self._secrets[store] = secret
        return secret


class SeededAnswerer:
    """Passes every request on with a fixed seed (replies are greedy; this pins sampling too)."""

    def __init__(self, inner: Answerer, seed: int = DEFAULT_SEED) -> None:
        self.inner = inner
        self.seed = seed

    @property
    def ready(self) -> bool:
        return bool(getattr(self.inner, "ready", True))

    def answer(self, request: AnswerRequest) -> AsyncIterator[ReplyEvent]:
        return self.inner.answer(dataclasses.replace(request, seed=self.seed))


def replay_settings(base: Settings, data_dir: Path) -> Settings:
    """``base`` moved onto ``data_dir`` (own database and indexes), same model and adapter."""
    return dataclasses.replace(
        base,
        data_dir=data_dir,
        database_url=f"sqlite:///{data_dir / 'replay.db'}",
        limits=REPLAY_LIMITS,
    )


class InProcessServer:
    """A ChatServer on a free port over a throwaway copy of the stores the transcripts use."""

    def __init__(
        self,
        settings: Settings,
        stores: Sequence[StoreFixture],
        *,
        answerer: Answerer | None = None,
        index_cache: Path | None = None,
        seed: int = DEFAULT_SEED,
        keep_dir: bool = False,
    ) -> None:
        self.base_settings = settings
        self.stores = _unique_stores(stores)
        self.given_answerer = answerer
        self.index_cache = index_cache
        self.seed = seed
        self.keep_dir = keep_dir
        self.data_dir: Path | None = None
        self.settings: Settings | None = None
        self.db: Any = None
        self.answerer: Any = None
        self.app: Any = None
        self.target: Target | None = None
        self.store_ids: dict[str, int] = {}

    async def __aenter__(self) -> Target:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> Target:
        """Prepare the data, load the answerer, listen; returns the target to replay on."""
        from chatbot.server.app import ChatServer
        from chatbot.storage.db import Database

        if self.given_answerer is None and not self.base_settings.model_path.exists():
            raise ModelNotFoundError(
                f"no model at {self.base_settings.model_path}; run 'chatbot model pull'"
            )
        self.data_dir = Path(tempfile.mkdtemp(prefix="chatbot-replay-"))
        self.settings = settings = replay_settings(self.base_settings, self.data_dir)
        try:
            self.db = await asyncio.to_thread(Database, settings.database_url)
            await asyncio.to_thread(self._prepare_stores)
            self._link_index_cache()
            if self.given_answerer is not None:
                inner: Any = self.given_answerer
            else:
                inner = await asyncio.to_thread(self._load_answerer, settings)
                await inner.start()
            self.answerer = inner
            token = await asyncio.to_thread(self._agent_token)
            self.app = ChatServer(settings, self.db, SeededAnswerer(inner, self.seed))
            port = await self.app.start(host="127.0.0.1", port=0)
        except BaseException:
            await self.stop()
            raise
        self.target = Target(f"ws://127.0.0.1:{port}", db=self.db, agent_token=token)
        log.info("replay server on port %d (data in %s)", port, self.data_dir)
        return self.target

    def _prepare_stores(self) -> None:
        from knowledge_base.demo import DEMO_STORE_NAME, ensure_demo_store
        from knowledge_base.importers import import_path
        from knowledge_base.stores import find_store

        for fixture in self.stores:
            if fixture.import_format and fixture.import_path:
                if not fixture.import_path.exists():
                    raise ConfigError(
                        f"store {fixture.name!r}: import file {fixture.import_path} not found"
                    )
                import_path(self.db, fixture.import_format, fixture.import_path, fixture.name)
            elif fixture.name == DEMO_STORE_NAME:
                ensure_demo_store(self.db)
            with self.db.session() as session:
                store = find_store(session, fixture.name)
                if store is None:
                    raise ConfigError(
                        f"store {fixture.name!r} is neither the demo store nor a named "
                        "import; give 'store: {name, import: {format, path}}'"
                    )
                self.store_ids[fixture.name] = store.id

    def _link_index_cache(self) -> None:
        """Point each store's index folder into the cache (keyed by store name)."""
        if self.index_cache is None or self.settings is None:
            return
        index_dir = self.settings.index_dir
        index_dir.mkdir(parents=True, exist_ok=True)
        for name, store_id in self.store_ids.items():
            cached = self.index_cache / _safe(name)
            cached.mkdir(parents=True, exist_ok=True)
            (index_dir / f"store-{store_id}").symlink_to(cached, target_is_directory=True)

    def _load_answerer(self, settings: Settings) -> Any:
        from chatbot.answering import build_answerer

        _seed_everything(self.seed)
        answerer = build_answerer(settings, self.db)  # type: ignore[operator]
        for store_id in self.store_ids.values():
            answerer.prepare(store_id)
        return answerer

    def _agent_token(self) -> str:
        from chatbot.agents import accounts, sessions

        password = secrets.token_urlsafe(24)
        with self.db.transaction() as session:
            accounts.add_agent(
                session, AGENT_EMAIL, password, stores=list(self.store_ids), name=AGENT_NAME
            )
        with self.db.transaction() as session:
            return sessions.login(session, AGENT_EMAIL, password).token

    async def stop(self) -> None:
        """Stop the server and the answerer; remove the data folder."""
        if self.app is not None:
            await self.app.stop(drain_s=0)
            self.app = None
        if self.answerer is not None and self.given_answerer is None:
            close = getattr(self.answerer, "close", None)
            if close is not None:
                try:
                    await close()
                except Exception:  # noqa: BLE001 - shutting down; nothing to save
                    log.debug("closing the answerer failed", exc_info=True)
        self.answerer = None
        if self.db is not None:
            self.db.dispose()
            self.db = None
        if self.data_dir is not None and not self.keep_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None


def _unique_stores(stores: Sequence[StoreFixture]) -> list[StoreFixture]:
    by_name: dict[str, StoreFixture] = {}
    for fixture in stores:
        known = by_name.get(fixture.name)
        if known is not None and known != fixture and fixture.import_path and known.import_path:
            raise ChatbotError(
                f"store {fixture.name!r} is imported from two different files "
                f"({known.import_path} and {fixture.import_path})",
                code="bad_transcript",
            )
        if known is None or (fixture.import_path and not known.import_path):
            by_name[fixture.name] = fixture
    return list(by_name.values())


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name) or "store"


def _seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    torch.manual_seed(seed)
