"""The project's error hierarchy.

    ChatbotError
    ├── ConfigError            bad settings or a missing file the user must provide
    ├── ModelNotFoundError     the base model has not been pulled yet
    ├── GenerationError        a generation request the engine cannot run (bad ids, too long)
    ├── StoreNotFoundError     unknown store name or widget key
    ├── NotFoundError          an unknown row (order, customer, conversation, agent)
    ├── ImportFileError        a broken import file: file, record/line and reason
    ├── IdentityError          a forged, expired or malformed identity token
    ├── AuthError              an agent without a valid session or without access
    ├── ProtocolError          a malformed wire message (carries an error code)
    ├── RateLimitError         a client exceeded a limit (carries an error code)
    └── ConflictError          a state transition that lost a race or is not allowed

Library code raises these; the CLI turns them into ``click.ClickException`` and the
server into ``error`` events or close codes, at the edges only.
"""

from __future__ import annotations


class ChatbotError(Exception):
    """Root of every error this project raises on purpose."""

    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(ChatbotError):
    code = "config_error"


class ModelNotFoundError(ChatbotError):
    code = "model_not_found"


class GenerationError(ChatbotError):
    code = "generation_error"


class StoreNotFoundError(ChatbotError):
    code = "unknown_store"


class NotFoundError(ChatbotError):
    code = "not_found"


class ImportFileError(ChatbotError):
    """A broken import file. The message names the file, the record or line, and the reason."""

    code = "import_error"

    def __init__(self, path: str, location: str, reason: str) -> None:
        self.path = path
        self.location = location
        self.reason = reason
        super().__init__(f"{path}: {location}: {reason}")


class IdentityError(ChatbotError):
    code = "invalid_identity"


class AuthError(ChatbotError):
    code = "unauthorized"


class ProtocolError(ChatbotError):
    code = "bad_message"


class RateLimitError(ChatbotError):
    code = "rate_limited"


class ConflictError(ChatbotError):
    code = "conflict"
