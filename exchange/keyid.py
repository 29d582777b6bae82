"""Participant key ids (light: the CLI and the client import this without the service layer)."""

from __future__ import annotations

from federation.keys import VerifyKey, key_id_hex

#: The fixed C2SP key name under which participant key ids are computed (specs/signing.md).
KEY_NAME = "hetex"


def participant_key_id(public_key: VerifyKey) -> str:
    """The key id a participant signs with: C2SP key id of its key under the name 'hetex', 8 hex digits."""
    return key_id_hex(KEY_NAME, public_key)
