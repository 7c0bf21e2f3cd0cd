"""The language-model engine: model loading, a compact Llama, continuous batching, streaming.

Import the pieces from their modules; this package imports nothing heavy on its own so
``chatbot --help`` stays fast.
"""

from __future__ import annotations
