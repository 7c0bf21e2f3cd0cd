"""pytest plugin: every transcript under ``tests/transcripts/**/*.yaml`` is a test item.

Registered from ``tests/conftest.py`` (``pytest_plugins``). One in-process server with the
real model serves the whole pytest session (started by the first transcript item, stopped
at the end), or ``--replay-server ws://...`` points the items at a running server. A
failing item shows the transcript's diff: each turn's reply, its sources, and expected
against actual. ``xfail: reason`` in the YAML marks an item xfail; items skip when the
model folder is missing. Transcript items carry the ``model`` marker.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chatbot.replay.format import Transcript, TranscriptError, load_file
from chatbot.replay.report import transcript_diff
from chatbot.replay.runner import TranscriptResult
from chatbot.settings import Settings

log = logging.getLogger(__name__)

_RUNTIME = pytest.StashKey["_Runtime"]()
_ITEMS = pytest.StashKey[list["TranscriptItem"]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("transcripts", "transcript replay tests")
    group.addoption(
        "--replay-server",
        metavar="URL",
        help="replay transcript items against this running server (ws://host:port) instead "
        "of an in-process one",
    )
    group.addoption(
        "--replay-concurrency",
        type=int,
        default=1,
        metavar="N",
        help="replay up to N transcripts at once (default 1: replies are repeatable)",
    )
    parser.addini(
        "replay_transcripts",
        "folders (relative to the rootdir) whose *.yaml files are transcript tests",
        type="linelist",
        default=["tests/transcripts"],
    )


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix not in (".yaml", ".yml"):
        return None
    roots = [parent.config.rootpath / p for p in parent.config.getini("replay_transcripts")]
    if any(file_path.is_relative_to(root) for root in roots):
        return TranscriptFile.from_parent(parent, path=file_path)  # type: ignore[no-any-return]
    return None


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    config.stash[_ITEMS] = [i for i in items if isinstance(i, TranscriptItem)]


def pytest_sessionfinish(session: pytest.Session) -> None:
    runtime = session.config.stash.get(_RUNTIME, None)
    if runtime is not None:
        runtime.close()
        del session.config.stash[_RUNTIME]


class TranscriptFailed(Exception):
    """A transcript whose replay failed; carries the result for the diff."""

    def __init__(self, result: TranscriptResult) -> None:
        super().__init__(result.transcript.name)
        self.result = result


class TranscriptFile(pytest.File):
    """One YAML file: one item per transcript (document) in it."""

    def collect(self) -> Iterator[pytest.Item]:
        try:
            transcripts = load_file(self.path)
        except TranscriptError as exc:
            yield BrokenTranscript.from_parent(self, name=self.path.name, error=exc)
            return
        for t in transcripts:
            yield TranscriptItem.from_parent(self, name=t.name, transcript=t)


class BrokenTranscript(pytest.Item):
    """A file that does not load: fails with the loader's file/turn/reason message."""

    def __init__(self, *, error: TranscriptError, **kw: Any) -> None:
        super().__init__(**kw)
        self.error = error

    def runtest(self) -> None:
        raise self.error

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        return str(excinfo.value)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"transcript file {self.path.name}"


class TranscriptItem(pytest.Item):
    """One transcript, replayed against the session's server."""

    def __init__(self, *, transcript: Transcript, **kw: Any) -> None:
        super().__init__(**kw)
        self.transcript = transcript
        self.add_marker(pytest.mark.model)
        # Tags select items with -k (markers would need registering).
        self.extra_keyword_matches.update(transcript.tags)
        if transcript.skip:
            self.add_marker(pytest.mark.skip(reason=transcript.skip))
        elif _missing_import(transcript):
            # e.g. the τ-bench store from ../shared on a machine without it
            self.add_marker(pytest.mark.skip(
                reason=f"the store's import data is missing: {transcript.store.import_path}"))
        if transcript.xfail:
            self.add_marker(
                pytest.mark.xfail(reason=transcript.xfail, raises=TranscriptFailed, strict=False)
            )

    def runtest(self) -> None:
        runtime = _runtime(self.config)
        result = runtime.result_for(self)
        if not result.passed:
            raise TranscriptFailed(result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, TranscriptFailed):
            return transcript_diff(excinfo.value.result, all_checks=False)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, max(0, self.transcript.line - 1), f"transcript: {self.transcript.name}"


def _missing_import(t: Transcript) -> bool:
    """A named import whose file is not on this machine (the item skips)."""
    path = t.store.import_path
    return path is not None and not path.exists()


def _runtime(config: pytest.Config) -> _Runtime:
    runtime = config.stash.get(_RUNTIME, None)
    if runtime is None:
        runtime = config.stash[_RUNTIME] = _Runtime(config)
    return runtime


class _Runtime:
    """The session's replay target, on an event loop in a background thread.

    pytest items are synchronous and pytest-asyncio owns per-test loops; the server and
    its sockets live on their own loop for the whole session instead.
    """

    def __init__(self, config: pytest.Config) -> None:
        from chatbot.replay.session import ReplaySession

        self.config = config
        self.server_url: str | None = config.getoption("--replay-server")
        self.concurrency = max(1, int(config.getoption("--replay-concurrency")))
        self.settings = Settings.from_env()
        self.items = config.stash.get(_ITEMS, [])
        self.results: dict[str, TranscriptResult] = {}
        self.failure: BaseException | None = None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="replay", daemon=True)
        self.thread.start()
        # Keep search indexes between sessions: pytest's cache folder, else the data dir
        # (as `chatbot replay` does), so only the first session embeds the store.
        store = getattr(config, "cache", None)
        cache = (
            Path(store.mkdir("chatbot-replay-index"))
            if store is not None
            else self.settings.data_dir / "replay-index-cache"
        )
        self.session = ReplaySession(
            self.settings,
            [i.transcript for i in self.items if not _missing_import(i.transcript)],
            server_url=self.server_url,
            index_cache=cache,
        )

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def result_for(self, item: TranscriptItem) -> TranscriptResult:
        if self.server_url is None and not self.settings.model_path.exists():
            pytest.skip(f"the model is not pulled ({self.settings.model_path})")
        if self.failure is not None:
            raise self.failure
        if item.nodeid not in self.results:
            batch = [item]
            if self.concurrency > 1:
                # Replay the rest of the selection with it: the engine batches their replies.
                batch += [
                    i for i in self.items
                    if i.nodeid not in self.results and i is not item and not i.transcript.skip
                    and not _missing_import(i.transcript)
                ]
            try:
                results = self._call(
                    self.session.run([i.transcript for i in batch],
                                     concurrency=self.concurrency)
                )
            except BaseException as exc:
                self.failure = exc
                raise
            for done, result in zip(batch, results, strict=True):
                self.results[done.nodeid] = result
        return self.results[item.nodeid]

    def close(self) -> None:
        try:
            self._call(self.session.stop())
        except Exception:  # noqa: BLE001 - teardown must not hide test results
            log.warning("stopping the replay server failed", exc_info=True)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()
