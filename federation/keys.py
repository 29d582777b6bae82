"""Ed25519 keys, C2SP key ids, verifier key strings, key files and a keyring (pure: stdlib + cryptography).

Key id rule (C2SP signed-note, used everywhere in hetex): SHA-256(name || "\\n" || 0x01 || public)[:4],
where 0x01 is the Ed25519 signature type byte and `public` is the raw 32-byte public key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from federation.errors import BadSignatureError, KeyFormatError

#: Signature type byte of Ed25519 in C2SP signed notes and key ids.
ED25519_TYPE = 0x01
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64


def _b64decode_strict(text: str, *, what: str) -> bytes:
    """Decode standard padded base64, refusing stray characters (and anything but text)."""
    if not isinstance(text, str):
        raise KeyFormatError(f"{what} must be a base64 string, not {type(text).__name__}")
    try:
        return base64.b64decode(text.strip().encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise KeyFormatError(f"{what} is not valid base64") from exc


class VerifyKey:
    """An Ed25519 public key: raw 32 bytes, verification, encodings."""

    __slots__ = ("_key", "_raw")

    def __init__(self, key: Ed25519PublicKey) -> None:
        self._key = key
        self._raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @classmethod
    def from_bytes(cls, raw: bytes) -> VerifyKey:
        """Build from the raw 32-byte public key."""
        if not isinstance(raw, bytes | bytearray) or len(raw) != PUBLIC_KEY_SIZE:
            raise KeyFormatError("an Ed25519 public key is exactly 32 bytes")
        try:
            return cls(Ed25519PublicKey.from_public_bytes(bytes(raw)))
        except ValueError as exc:  # pragma: no cover - cryptography accepts any 32 bytes today
            raise KeyFormatError("not an Ed25519 public key") from exc

    @classmethod
    def from_base64(cls, text: str) -> VerifyKey:
        """Decode the hetex public key text form: base64 of the raw 32 bytes."""
        return cls.from_bytes(_b64decode_strict(text, what="public key"))

    @classmethod
    def from_pem(cls, data: bytes) -> VerifyKey:
        """Load a PEM SubjectPublicKeyInfo Ed25519 key."""
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise KeyFormatError("not a PEM public key") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFormatError("not an Ed25519 public key")
        return cls(key)

    @classmethod
    def from_der(cls, data: bytes) -> VerifyKey:
        """Load a DER SubjectPublicKeyInfo Ed25519 key."""
        try:
            key = serialization.load_der_public_key(data)
        except ValueError as exc:
            raise KeyFormatError("not a DER public key") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFormatError("not an Ed25519 public key")
        return cls(key)

    @property
    def raw(self) -> bytes:
        """The raw 32-byte public key."""
        return self._raw

    @property
    def crypto_key(self) -> Ed25519PublicKey:
        """The underlying `cryptography` key object (for libraries that want one)."""
        return self._key

    def to_base64(self) -> str:
        """Base64 (standard, padded) of the raw 32 bytes: the form stored and exchanged by hetex."""
        return base64.b64encode(self._raw).decode("ascii")

    def to_pem(self) -> bytes:
        """PEM SubjectPublicKeyInfo."""
        return self._key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def verify(self, signature: bytes, data: bytes) -> None:
        """Return None if `signature` is a valid Ed25519 signature of `data`, else raise BadSignatureError."""
        if len(signature) != SIGNATURE_SIZE:
            raise BadSignatureError("an Ed25519 signature is exactly 64 bytes")
        try:
            self._key.verify(signature, data)
        except InvalidSignature as exc:
            raise BadSignatureError("signature does not verify") from exc

    def is_valid(self, signature: bytes, data: bytes) -> bool:
        """Boolean form of verify(), for loops over candidate signatures."""
        try:
            self.verify(signature, data)
        except BadSignatureError:
            return False
        return True

    def key_id(self, name: str) -> bytes:
        """C2SP key id of this key under `name`."""
        return key_id(name, self._raw)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifyKey) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"VerifyKey({self.to_base64()})"


class SigningKey:
    """An Ed25519 private key: sign bytes, expose the public half, PEM/seed encodings."""

    __slots__ = ("_key", "_public")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self._public = VerifyKey(key.public_key())

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh random key."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        """Build from the 32-byte RFC 8032 private seed (deterministic: for tests and vectors)."""
        if not isinstance(seed, bytes | bytearray) or len(seed) != 32:
            raise KeyFormatError("an Ed25519 seed is exactly 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(bytes(seed)))

    from_private_bytes = from_seed

    @classmethod
    def from_pem(cls, data: bytes) -> SigningKey:
        """Load an unencrypted PEM PKCS#8 Ed25519 private key."""
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise KeyFormatError("not an unencrypted PEM private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFormatError("not an Ed25519 private key")
        return cls(key)

    @classmethod
    def from_der(cls, data: bytes) -> SigningKey:
        """Load an unencrypted DER PKCS#8 Ed25519 private key."""
        try:
            key = serialization.load_der_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise KeyFormatError("not an unencrypted DER private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFormatError("not an Ed25519 private key")
        return cls(key)

    @property
    def public(self) -> VerifyKey:
        """The matching public key."""
        return self._public

    @property
    def crypto_key(self) -> Ed25519PrivateKey:
        """The underlying `cryptography` key object (for libraries that want one)."""
        return self._key

    def seed(self) -> bytes:
        """The raw 32-byte private seed (secret!)."""
        return self._key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    def to_pem(self) -> bytes:
        """Unencrypted PEM PKCS#8 (secret!)."""
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def sign(self, data: bytes) -> bytes:
        """Ed25519 signature (64 bytes, deterministic) of `data`."""
        return self._key.sign(data)

    def key_id(self, name: str) -> bytes:
        """C2SP key id of the public key under `name`."""
        return self._public.key_id(name)

    def __repr__(self) -> str:
        return f"SigningKey(public={self._public.to_base64()})"


# ---------------------------------------------------------------------------------------------------
# key ids and C2SP verifier key strings


def check_key_name(name: str) -> str:
    """Return `name` if it is a valid C2SP key name (non-empty, no whitespace, no '+'), else raise."""
    if not isinstance(name, str) or not name:
        raise KeyFormatError("a key name must be a non-empty string")
    if "+" in name or any(ch.isspace() for ch in name) or not name.isprintable():
        raise KeyFormatError("a key name must not contain '+', whitespace or control characters")
    return name


def key_id(name: str, public: bytes | VerifyKey) -> bytes:
    """C2SP key id: SHA-256(name || '\\n' || 0x01 || public key)[:4]."""
    raw = public.raw if isinstance(public, VerifyKey) else public
    if len(raw) != PUBLIC_KEY_SIZE:
        raise KeyFormatError("an Ed25519 public key is exactly 32 bytes")
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([ED25519_TYPE]) + raw).digest()[:4]


def key_id_hex(name: str, public: bytes | VerifyKey) -> str:
    """The key id as 8 lowercase hex digits (the DSSE `keyid` and HTTP `keyid` form used by hetex)."""
    return key_id(name, public).hex()


def encode_public_key(public: bytes | VerifyKey) -> str:
    """Base64 of the raw 32-byte public key."""
    key = public if isinstance(public, VerifyKey) else VerifyKey.from_bytes(public)
    return key.to_base64()


def decode_public_key(text: str) -> VerifyKey:
    """Inverse of encode_public_key."""
    return VerifyKey.from_base64(text)


def encode_verifier_key(name: str, public: bytes | VerifyKey) -> str:
    """C2SP verifier key string: `<name>+<hex key id>+<base64(0x01 || public key)>`."""
    check_key_name(name)
    key = public if isinstance(public, VerifyKey) else VerifyKey.from_bytes(public)
    blob = base64.b64encode(bytes([ED25519_TYPE]) + key.raw).decode("ascii")
    return f"{name}+{key_id_hex(name, key)}+{blob}"


@dataclass(frozen=True)
class VerifierKey:
    """A parsed C2SP verifier key: name, 4-byte key id and the Ed25519 key."""

    name: str
    key_id: bytes
    key: VerifyKey

    def encode(self) -> str:
        """Back to the `<name>+<hex>+<base64>` string."""
        return encode_verifier_key(self.name, self.key)


def parse_verifier_key(text: str) -> VerifierKey:
    """Parse a C2SP verifier key string (split on the first two '+'; the id must match the key)."""
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise KeyFormatError("a verifier key is <name>+<hex key id>+<base64 key>")
    name, hex_id, blob = parts
    check_key_name(name)
    if len(hex_id) != 8 or hex_id.lower() != hex_id:
        raise KeyFormatError("the key id of a verifier key is 8 lowercase hex digits")
    try:
        kid = bytes.fromhex(hex_id)
    except ValueError as exc:
        raise KeyFormatError("the key id of a verifier key is 8 lowercase hex digits") from exc
    data = _b64decode_strict(blob, what="verifier key")
    if len(data) != 1 + PUBLIC_KEY_SIZE or data[0] != ED25519_TYPE:
        raise KeyFormatError("only Ed25519 verifier keys (type 0x01, 32 bytes) are supported")
    key = VerifyKey.from_bytes(data[1:])
    if key_id(name, key) != kid:
        raise KeyFormatError("the key id of the verifier key does not match its name and key")
    return VerifierKey(name=name, key_id=kid, key=key)


SIGNER_KEY_PREFIX = "PRIVATE+KEY+"


def encode_signer_key(name: str, key: SigningKey) -> str:
    """C2SP/Go note signer key string: `PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || seed)>` (secret!)."""
    check_key_name(name)
    blob = base64.b64encode(bytes([ED25519_TYPE]) + key.seed()).decode("ascii")
    return f"{SIGNER_KEY_PREFIX}{name}+{key_id_hex(name, key.public)}+{blob}"


def parse_signer_key(text: str) -> tuple[str, SigningKey]:
    """Parse a signer key string into (name, key); the key id must match."""
    text = text.strip()
    if not text.startswith(SIGNER_KEY_PREFIX):
        raise KeyFormatError("a signer key starts with PRIVATE+KEY+")
    parts = text[len(SIGNER_KEY_PREFIX) :].split("+", 2)
    if len(parts) != 3:
        raise KeyFormatError("a signer key is PRIVATE+KEY+<name>+<hex key id>+<base64 key>")
    name, hex_id, blob = parts
    check_key_name(name)
    data = _b64decode_strict(blob, what="signer key")
    if len(data) != 33 or data[0] != ED25519_TYPE:
        raise KeyFormatError("only Ed25519 signer keys (type 0x01, 32-byte seed) are supported")
    key = SigningKey.from_seed(data[1:])
    if key_id_hex(name, key.public) != hex_id:
        raise KeyFormatError("the key id of the signer key does not match its name and key")
    return name, key


# ---------------------------------------------------------------------------------------------------
# key files


def save_signing_key(path: Path, key: SigningKey, *, overwrite: bool = False) -> Path:
    """Write the private key as PEM PKCS#8 with file mode 0600 (refuses to overwrite unless told)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, key.to_pem())
    finally:
        os.close(fd)
    return path


def load_signing_key(path: Path) -> SigningKey:
    """Read a private key file written by save_signing_key."""
    return SigningKey.from_pem(Path(path).read_bytes())


def save_public_key(path: Path, key: VerifyKey, *, overwrite: bool = False) -> Path:
    """Write the public key as one line of base64 (raw 32 bytes)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(path)
    path.write_text(key.to_base64() + "\n", encoding="ascii")
    return path


def load_public_key(path: Path) -> VerifyKey:
    """Read a `.pub` file (base64 raw key; a C2SP verifier key string is accepted too)."""
    text = Path(path).read_text(encoding="ascii").strip()
    if len(text) == 44:  # base64 of 32 bytes; a verifier key string is always longer
        return VerifyKey.from_base64(text)
    return parse_verifier_key(text).key


def generate_keypair_files(out_dir: Path, name: str) -> tuple[Path, Path]:
    """Create `<name>.pem` (private, 0600) and `<name>.pub` (base64) in out_dir; return both paths."""
    check_key_name(name)
    if "/" in name or name in {".", ".."}:
        raise KeyFormatError("a key name used as a file name must not contain '/'")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    priv_path = out_dir / f"{name}.pem"
    pub_path = out_dir / f"{name}.pub"
    if priv_path.exists() or pub_path.exists():
        raise FileExistsError(priv_path if priv_path.exists() else pub_path)
    key = SigningKey.generate()
    save_signing_key(priv_path, key)
    save_public_key(pub_path, key.public)
    return priv_path, pub_path


# ---------------------------------------------------------------------------------------------------
# keyring


@dataclass(frozen=True)
class KeyEntry:
    """A trusted public key with its id, optional name/owner and validity window (epoch seconds)."""

    key_id: str
    key: VerifyKey
    name: str | None = None
    owner: str | None = None
    not_before: int | None = None
    not_after: int | None = None

    def valid_at(self, at: int | None) -> bool:
        """True when `at` is inside [not_before, not_after] (None means: do not check time)."""
        if at is None:
            return True
        if self.not_before is not None and at < self.not_before:
            return False
        return not (self.not_after is not None and at > self.not_after)


def _id_text(kid: str | bytes) -> str:
    return kid.hex() if isinstance(kid, bytes | bytearray) else kid


class Keyring:
    """Trusted keys by key id (text; bytes ids are looked up as lowercase hex)."""

    def __init__(self, entries: Iterable[KeyEntry] = ()) -> None:
        self._entries: dict[str, KeyEntry] = {}
        for entry in entries:
            self._put(entry)

    def _put(self, entry: KeyEntry) -> KeyEntry:
        old = self._entries.get(entry.key_id)
        if old is not None and old.key != entry.key:
            raise KeyFormatError(f"key id {entry.key_id!r} is already bound to another key")
        self._entries[entry.key_id] = entry
        return entry

    def add(
        self,
        kid: str | bytes,
        key: VerifyKey,
        *,
        name: str | None = None,
        owner: str | None = None,
        not_before: int | None = None,
        not_after: int | None = None,
    ) -> KeyEntry:
        """Trust `key` under id `kid` (re-adding the same key replaces its metadata)."""
        return self._put(KeyEntry(_id_text(kid), key, name, owner, not_before, not_after))

    def add_named(
        self,
        name: str,
        key: VerifyKey,
        *,
        owner: str | None = None,
        not_before: int | None = None,
        not_after: int | None = None,
    ) -> KeyEntry:
        """Trust `key` under its C2SP hex key id for `name`."""
        return self.add(key_id_hex(name, key), key, name=name, owner=owner, not_before=not_before, not_after=not_after)

    def entry(self, kid: str | bytes) -> KeyEntry | None:
        """The entry for a key id, ignoring validity windows."""
        return self._entries.get(_id_text(kid))

    def lookup(self, kid: str | bytes, *, at: int | None = None) -> VerifyKey | None:
        """The key for `kid` if known (and valid at `at` when given), else None."""
        entry = self._entries.get(_id_text(kid))
        if entry is None or not entry.valid_at(at):
            return None
        return entry.key

    def entries(self, *, at: int | None = None) -> list[KeyEntry]:
        """All entries (valid at `at` when given), in insertion order."""
        return [e for e in self._entries.values() if e.valid_at(at)]

    def __contains__(self, kid: object) -> bool:
        return isinstance(kid, str | bytes) and _id_text(kid) in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
