"""Crockford base32 codes for operators, sites and pools: unambiguous letters, random not sequential."""

from __future__ import annotations

import random
import secrets

# Crockford base32: digits and upper-case letters without I, L, O and U.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ALPHABET_SET = frozenset(ALPHABET)


def random_code(length: int, rng: random.Random | None = None) -> str:
    """Return a random code of `length` Crockford characters (OS randomness unless `rng` is given)."""
    if length < 1:
        raise ValueError("code length must be at least 1")
    if rng is None:
        return "".join(secrets.choice(ALPHABET) for _ in range(length))
    return "".join(rng.choice(ALPHABET) for _ in range(length))


def is_code(s: str, min_length: int = 1, max_length: int | None = None) -> bool:
    """True when `s` is canonical Crockford base32 (upper case) within the given length bounds."""
    if not isinstance(s, str) or len(s) < min_length:
        return False
    if max_length is not None and len(s) > max_length:
        return False
    return all(ch in _ALPHABET_SET for ch in s)
