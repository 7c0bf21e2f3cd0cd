"""`chatbot replay` in-process pulls the default model itself, as `serve` and `ask` do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import chatbot.engine.loader as loader
import chatbot.replay.session as session
from chatbot.cli import cli

TRANSCRIPT = "name: t\nstore: demo\nturns:\n  - shopper: hi\n"


class _Stop(Exception):
    pass


def test_replay_pulls_the_model_on_a_fresh_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Any] = []

    def fake_ensure(settings: Any, progress: bool = True) -> Path:
        calls.append(settings.model_path)
        return settings.model_path

    async def fake_replay(*args: Any, **kwargs: Any) -> Any:
        raise _Stop  # the pull happened before the server would start

    monkeypatch.setattr(loader, "ensure_model", fake_ensure)
    monkeypatch.setattr(session, "replay", fake_replay)
    (tmp_path / "t.yaml").write_text(TRANSCRIPT)
    env = {"CHATBOT_HOME": str(tmp_path / "home")}
    env_clear = {"CHATBOT_MODEL": None, "CHATBOT_DATA_DIR": None}
    result = CliRunner().invoke(cli, ["replay", str(tmp_path / "t.yaml")],
                                env={**env, **env_clear})
    assert isinstance(result.exception, _Stop), result.output
    assert calls == [tmp_path / "home" / "models" / "SmolLM2-135M-Instruct"]


def test_replay_against_a_server_pulls_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(loader, "ensure_model", lambda s, progress=True: calls.append(s))

    async def fake_replay(*args: Any, **kwargs: Any) -> Any:
        raise _Stop

    monkeypatch.setattr(session, "replay", fake_replay)
    (tmp_path / "t.yaml").write_text(TRANSCRIPT)
    result = CliRunner().invoke(
        cli, ["replay", str(tmp_path / "t.yaml"), "--server", "ws://127.0.0.1:1"],
        env={"CHATBOT_HOME": str(tmp_path / "home"), "CHATBOT_MODEL": None},
    )
    assert isinstance(result.exception, _Stop), result.output
    assert calls == []
