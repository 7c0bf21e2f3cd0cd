"""One frozen ``Settings`` object, built from the environment and CLI flags.

This is the only module that reads ``os.environ``. Everything else receives a
``Settings`` (or the few values it needs) explicitly.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "CHATBOT_"


def _default_home(env: Mapping[str, str]) -> Path:
    if env.get("CHATBOT_HOME"):
        return Path(env["CHATBOT_HOME"]).expanduser()
    return Path.home() / ".chatbot"


@dataclass(frozen=True)
class Limits:
    """Abuse limits for the public sockets."""

    max_frame_bytes: int = 64 * 1024
    max_message_chars: int = 4000
    messages_per_minute_per_connection: int = 20
    messages_per_minute_per_ip: int = 60
    max_connections: int = 2000
    max_connections_per_ip: int = 50
    idle_timeout_s: float = 600.0
    max_queued_messages: int = 3
    # Every frame (typing included) from one address, over all its connections.
    frames_per_minute_per_ip: int = 6000
    # Conversations one address may hand to the agents (waiting) per hour.
    waiting_per_ip_per_hour: int = 10


@dataclass(frozen=True)
class Settings:
    """Process-wide configuration. Build with :meth:`from_env`; never mutate."""

    data_dir: Path
    database_url: str
    model_path: Path
    adapter_path: Path | None
    host: str = "127.0.0.1"
    port: int = 8080
    # Engine
    # Weight format: auto | fp32 | bf16 | fp16 | int8 | q4. auto: q4 on CPUs with bf16
    # instructions (AVX512-BF16/AMX), fp16 on other AVX2 CPUs, else fp32; see
    # chatbot/engine/formats.py
    engine_dtype: str = "auto"
    engine_max_batch: int = 64
    engine_threads: int = 0  # 0: leave torch's default
    engine_draft_tokens: int = 4  # prompt-lookup draft length; 0 turns drafting off
    # q4's native kernel (chatbot/engine/native.py): CHATBOT_NATIVE=0 turns it off,
    # CHATBOT_Q4_ACTIVATIONS=int8 builds the opt-in VNNI variant, CC picks the compiler
    engine_native: bool = True
    # A reply never depends on the batch or the prefix cache (q4 with the native kernel:
    # every decode row through it, prompts in aligned pieces). Off: faster at many
    # concurrent streams (the bf16 copy past four sequences), replies may then differ.
    engine_batch_invariant: bool = True
    engine_q4_activations: str = ""
    engine_cc: str = ""
    cache_dir: Path | None = None  # CHATBOT_CACHE_DIR; None: ~/.cache/chatbot
    max_new_tokens: int = 160
    # Retrieval
    retrieval_k: int = 4
    retrieval_min_score: float = 0.35
    limits: Limits = field(default_factory=Limits)
    log_level: str = "INFO"
    # Test-only: "TOKENS:DELAY" makes `chatbot serve` stream echo replies instead of
    # loading the model (crash-safety tests, load benchmark --fake). See fake_answerer.py.
    fake_answerer: str = ""
    # When set, /metrics answers only requests with "Authorization: Bearer <token>".
    metrics_token: str = ""

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "indexes"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied (``None`` values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``CHATBOT_*`` variables, then ``overrides`` (CLI flags) on top.

        ``overrides`` whose value is ``None`` are ignored, so CLI options can be passed
        through unconditionally.
        """
        env = os.environ if env is None else env
        overrides = {k: v for k, v in overrides.items() if v is not None}
        data_dir = Path(overrides.pop("data_dir", None) or _default_home(env)).expanduser()
        database_url = overrides.pop("database_url", None) or env.get(
            "CHATBOT_DATABASE_URL", f"sqlite:///{data_dir / 'chatbot.db'}"
        )
        model_path = Path(
            overrides.pop("model_path", None)
            or env.get("CHATBOT_MODEL")
            or data_dir / "models" / "SmolLM2-135M-Instruct"
        ).expanduser()
        adapter_env = overrides.pop("adapter_path", None) or env.get("CHATBOT_ADAPTER")
        adapter_path: Path | None
        if adapter_env in ("none", "off", ""):
            adapter_path = None
        elif adapter_env:
            adapter_path = Path(adapter_env).expanduser()
        else:
            adapter_path = default_adapter_path()
        limits = Limits(
            **{
                f.name: _cast(f, env[f"CHATBOT_{f.name.upper()}"])
                for f in dataclasses.fields(Limits)
                if f"CHATBOT_{f.name.upper()}" in env
            }
        )
        base: dict[str, Any] = {
            "host": env.get("CHATBOT_HOST", "127.0.0.1"),
            "port": int(env.get("CHATBOT_PORT", "8080")),
            "engine_dtype": env.get("CHATBOT_ENGINE_DTYPE", "auto"),
            "engine_max_batch": int(env.get("CHATBOT_ENGINE_MAX_BATCH", "64")),
            "engine_threads": int(env.get("CHATBOT_ENGINE_THREADS", "0")),
            "engine_draft_tokens": int(env.get("CHATBOT_ENGINE_DRAFT_TOKENS", "4")),
            "engine_native": env.get("CHATBOT_NATIVE", "1").strip().lower()
            not in ("0", "false", "no", "off"),
            "engine_batch_invariant": env.get("CHATBOT_ENGINE_BATCH_INVARIANT", "1")
            .strip()
            .lower()
            not in ("0", "false", "no", "off"),
            "engine_q4_activations": env.get("CHATBOT_Q4_ACTIVATIONS", ""),
            "engine_cc": env.get("CC", ""),
            "cache_dir": Path(env["CHATBOT_CACHE_DIR"]).expanduser()
            if env.get("CHATBOT_CACHE_DIR")
            else None,
            "max_new_tokens": int(env.get("CHATBOT_MAX_NEW_TOKENS", "160")),
            "retrieval_k": int(env.get("CHATBOT_RETRIEVAL_K", "4")),
            "retrieval_min_score": float(env.get("CHATBOT_RETRIEVAL_MIN_SCORE", "0.35")),
            "log_level": env.get("CHATBOT_LOG_LEVEL", "INFO"),
            "fake_answerer": env.get("CHATBOT_FAKE_ANSWERER", ""),
            "metrics_token": env.get("CHATBOT_METRICS_TOKEN", ""),
            "limits": limits,
        }
        base.update(overrides)
        return cls(
            data_dir=data_dir,
            database_url=database_url,
            model_path=model_path,
            adapter_path=adapter_path,
            **base,
        )


def _cast(f: dataclasses.Field[Any], raw: str) -> Any:
    """Parse an environment string as the type of the field's default value."""
    default: Any = f.default
    return type(default)(raw)


def default_adapter_path() -> Path | None:
    """The LoRA adapter shipped with the package, when there is one."""
    path = Path(__file__).parent / "adapters" / "demo"
    return path if (path / "adapter_config.json").exists() else None
