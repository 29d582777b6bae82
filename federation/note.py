"""C2SP signed notes and tlog checkpoints with Ed25519 (pure: stdlib + cryptography).

A note is its text (UTF-8, ends in a newline, no control characters but newline), one blank line, then
one line per signature: `— <name> <base64(4-byte key id || 64-byte signature)>`. The signature covers
the text bytes. Verification follows golang.org/x/mod/sumdb/note: signatures by unknown keys are
ignored; a known key whose signature fails, or that signs twice, rejects the note; at least one known
key must verify. A checkpoint is a note whose text is origin, tree size, base64 root, extension lines.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from federation.errors import KeyFormatError, NoteError
from federation.keys import (
    Keyring,
    SigningKey,
    VerifierKey,
    VerifyKey,
    check_key_name,
    key_id,
    parse_verifier_key,
)

SIG_PREFIX = "\u2014 "  # EM DASH, space
MAX_SIGNATURES = 100
_SIZE = re.compile(r"(0|[1-9][0-9]*)\Z")


@dataclass(frozen=True)
class NoteSigner:
    """A named Ed25519 key that signs notes."""

    name: str
    key: SigningKey

    def __post_init__(self) -> None:
        check_key_name(self.name)

    @property
    def key_id(self) -> bytes:
        """C2SP key id of this signer."""
        return key_id(self.name, self.key.public)

    @property
    def verifier(self) -> NoteVerifier:
        """The matching verifier."""
        return NoteVerifier(self.name, self.key.public)


@dataclass(frozen=True)
class NoteVerifier:
    """A named Ed25519 public key trusted to sign notes (the key id is derived, never trusted)."""

    name: str
    key: VerifyKey

    def __post_init__(self) -> None:
        check_key_name(self.name)

    @property
    def key_id(self) -> bytes:
        """C2SP key id of this verifier."""
        return key_id(self.name, self.key)

    @classmethod
    def from_string(cls, text: str) -> NoteVerifier:
        """From a C2SP verifier key string `<name>+<hex id>+<base64(0x01||key)>`."""
        vk = parse_verifier_key(text)
        return cls(vk.name, vk.key)

    def to_string(self) -> str:
        """The C2SP verifier key string."""
        return VerifierKey(self.name, self.key_id, self.key).encode()


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: signer name, 4-byte key id, raw signature."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        """The signature line without its newline."""
        blob = base64.b64encode(self.key_id + self.signature).decode("ascii")
        return f"{SIG_PREFIX}{self.name} {blob}"


@dataclass(frozen=True)
class OpenedNote:
    """A verified note: its text, the verified signatures and the ignored (unknown-key) ones."""

    text: str
    verified: tuple[NoteSignature, ...]
    unverified: tuple[NoteSignature, ...] = field(default=())


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("malformed", "note text must end with a newline")
    for ch in text:
        if (ord(ch) < 0x20 and ch != "\n") or 0xD800 <= ord(ch) <= 0xDFFF:
            raise NoteError("malformed", "note text contains a control character")


def sign_note(text: str, signers: Sequence[NoteSigner]) -> str:
    """Sign `text` with each signer and return the full note (text, blank line, signature lines)."""
    _check_text(text)
    if not signers:
        raise ValueError("at least one signer is required")
    data = text.encode("utf-8")
    lines = [NoteSignature(s.name, s.key_id, s.key.sign(data)).line() + "\n" for s in signers]
    return text + "\n" + "".join(lines)


VerifierSet = Sequence[NoteVerifier] | Mapping[str, VerifyKey] | Keyring


def _verifier_index(verifiers: VerifierSet) -> dict[tuple[str, bytes], VerifyKey]:
    items: Iterable[tuple[str, VerifyKey]]
    if isinstance(verifiers, Keyring):
        items = [(e.name, e.key) for e in verifiers.entries() if e.name is not None]
    elif isinstance(verifiers, Mapping):
        items = list(verifiers.items())
    else:
        items = [(v.name, v.key) for v in verifiers]
    return {(name, key_id(name, key)): key for name, key in items}


def _parse(note: str) -> tuple[str, list[tuple[str, NoteSignature]]]:
    """Split a note into its text and (raw line, signature) pairs; raise NoteError if malformed."""
    if not isinstance(note, str):
        raise NoteError("malformed", "a note is text")
    for ch in note:
        if (ord(ch) < 0x20 and ch != "\n") or 0xD800 <= ord(ch) <= 0xDFFF:
            raise NoteError("malformed", "note contains a control character")
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("malformed", "note has no signature block")
    text, block = note[: split + 1], note[split + 2 :]
    if not block or not block.endswith("\n"):
        raise NoteError("malformed", "signature block must be non-empty and end with a newline")
    sigs: list[tuple[str, NoteSignature]] = []
    for line in block[:-1].split("\n"):
        if not line.startswith(SIG_PREFIX):
            raise NoteError("malformed", "signature line must start with an em dash and a space")
        name, sep, blob = line[len(SIG_PREFIX) :].partition(" ")
        try:
            check_key_name(name)
            raw = base64.b64decode(blob.encode("ascii"), validate=True)
        except (KeyFormatError, binascii.Error, UnicodeEncodeError, ValueError) as exc:
            raise NoteError("malformed", "bad signature line") from exc
        if not sep or not blob or len(raw) < 5:
            raise NoteError("malformed", "bad signature line")
        sigs.append((line, NoteSignature(name, raw[:4], raw[4:])))
        if len(sigs) > MAX_SIGNATURES:
            raise NoteError("malformed", f"more than {MAX_SIGNATURES} signatures")
    return text, sigs


def open_note(note: str, verifiers: VerifierSet) -> OpenedNote:
    """Verify a note against trusted verifiers; return text and signatures or raise NoteError.

    Reasons: malformed, duplicate_signature, bad_signature (a known key's signature fails),
    no_known_signature (no signature is by a known key).
    """
    text, sigs = _parse(note)
    known = _verifier_index(verifiers)
    data = text.encode("utf-8")
    verified: list[NoteSignature] = []
    unverified: list[NoteSignature] = []
    seen_known: set[tuple[str, bytes]] = set()
    seen_lines: set[str] = set()
    for line, sig in sigs:
        key = known.get((sig.name, sig.key_id))
        if key is None:
            if line not in seen_lines:
                seen_lines.add(line)
                unverified.append(sig)
            continue
        if (sig.name, sig.key_id) in seen_known:
            raise NoteError("duplicate_signature", f"key {sig.name} signs the note twice")
        seen_known.add((sig.name, sig.key_id))
        if not key.is_valid(sig.signature, data):
            raise NoteError("bad_signature", f"signature by {sig.name} does not verify", key_name=sig.name)
        verified.append(sig)
    if not verified:
        raise NoteError("no_known_signature", "no signature by a known key", names=[s.name for s in unverified])
    return OpenedNote(text, tuple(verified), tuple(unverified))


def verify_note(note: str, verifiers: VerifierSet) -> str:
    """Return the note's text if at least one known key verifies it (see open_note), else raise NoteError."""
    return open_note(note, verifiers).text


# ---------------------------------------------------------------------------------------------------
# checkpoints (C2SP tlog-checkpoint)


@dataclass(frozen=True)
class Checkpoint:
    """A transparency log checkpoint: origin, tree size, root hash, optional extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin or not self.origin.isprintable():
            raise ValueError("origin must be one non-empty printable line")
        if not isinstance(self.size, int) or self.size < 0:
            raise ValueError("size must be a non-negative int")
        if not isinstance(self.root, bytes) or not self.root:
            raise ValueError("root must be non-empty bytes")
        for ext in self.extensions:
            if not ext or "\n" in ext or not ext.isprintable():
                raise ValueError("extension lines must be non-empty printable lines")

    def to_text(self) -> str:
        """The note text of this checkpoint (ends with a newline)."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode("ascii"), *self.extensions]
        return "".join(line + "\n" for line in lines)

    def sign(self, signers: Sequence[NoteSigner]) -> str:
        """The signed note of this checkpoint."""
        return sign_note(self.to_text(), signers)


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse checkpoint note text (not the signatures; see verify_checkpoint); raise NoteError if bad."""
    if not text.endswith("\n"):
        raise NoteError("malformed", "checkpoint text must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise NoteError("malformed", "checkpoint needs origin, size and root lines")
    origin, size_s, root_s, *extensions = lines
    if not _SIZE.match(size_s):
        raise NoteError("malformed", "tree size must be a decimal number without leading zeros")
    try:
        root = base64.b64decode(root_s.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise NoteError("malformed", "root hash is not base64") from exc
    try:
        return Checkpoint(origin, int(size_s), root, tuple(extensions))
    except ValueError as exc:
        raise NoteError("malformed", str(exc)) from exc


def verify_checkpoint(note: str, verifiers: VerifierSet, *, origin: str | None = None) -> Checkpoint:
    """Verify a signed checkpoint note and parse it; `origin` (when given) must match."""
    cp = parse_checkpoint(verify_note(note, verifiers))
    if origin is not None and cp.origin != origin:
        raise NoteError("wrong_origin", f"checkpoint origin {cp.origin!r} is not {origin!r}")
    return cp
