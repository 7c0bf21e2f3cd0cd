"""Which customers are held out of training, so the demo-store eval asks about unseen orders."""

from __future__ import annotations

import hashlib

# One customer in five is kept for evaluation; their orders never appear in training.
HELDOUT_FRACTION = 5


def is_heldout_customer(source_id: str, seed: int = 0) -> bool:
    """True for the customers the demo eval uses (stable across runs and machines)."""
    digest = hashlib.sha256(f"{seed}:{source_id}".encode()).digest()
    return digest[0] % HELDOUT_FRACTION == 0
