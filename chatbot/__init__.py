"""Self-hostable, grounded customer-service chatbot for online stores."""

import os as _os

__version__ = "0.1.0"

# OpenMP threads keep spinning after a parallel region. On a small CPU they take the core
# that the event loop and the engine's one-thread decode steps need (measured on the
# 23 Nov 2-core AVX512-BF16 box with q4 weights: single-stream decode 36 -> 48 tok/s, cold
# first token 517 -> 381 ms; bench/engine.py; not re-measured on AVX2/fp16). libgomp
# reads this when torch loads it, so it is set here, before anything imports torch; a
# value from the environment wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
