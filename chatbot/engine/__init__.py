"""The language-model engine: model loading, a compact Llama, continuous batching, streaming.

``Engine.load(settings)`` gives a ready engine; ``await engine.stream(request)`` yields
text. The heavy modules (torch, transformers) load when this package is imported, so
import it only where generation is needed.
"""

from __future__ import annotations

from chatbot.engine.engine import Completion, Engine, GenerationRequest, TokenEvent
from chatbot.engine.loader import ensure_model, pull_model, require_model

__all__ = [
    "Completion",
    "Engine",
    "GenerationRequest",
    "TokenEvent",
    "ensure_model",
    "pull_model",
    "require_model",
]
