"""Seeds shared by the engines and `fmae denoise`: one user seed, independent generators."""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, purpose: str) -> int:
    """Independent generator seeds for init, data order and dropout from one user seed."""
    digest = hashlib.sha256(f"fmae:{seed}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)
