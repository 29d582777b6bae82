"""Hard limits the offline verifier enforces on a bundle (pure; documented in specs/audit-verifier.md section 6)."""

from __future__ import annotations

from dataclasses import dataclass, fields

MIB = 1 << 20
GIB = 1 << 30


@dataclass(frozen=True)
class Limits:
    """Every bound on what the verifier reads; a bundle over any of them is refused with a named problem."""

    #: bytes read out of an archive after decompression (all members and headers together)
    max_inflated_bytes: int = 8 * GIB
    #: size of one large member (records.jsonl, proofs.jsonl, consistency.jsonl)
    max_member_bytes: int = 4 * GIB
    #: size of every other file (manifest.json, manifest.sig, checkpoint, catalogue.json, summary.csv, keys/*)
    max_small_file_bytes: int = 16 * MIB
    #: one line of a .jsonl file, newline included
    max_line_bytes: int = 1 * MIB
    #: lines of records.jsonl (and of proofs.jsonl, consistency.jsonl)
    max_records: int = 50_000_000
    #: files under keys/
    max_keys: int = 10_000
    #: a tar extended header (pax, GNU long name)
    max_tar_header_bytes: int = 64 * 1024

    @classmethod
    def names(cls) -> list[str]:
        """The limit names (also the CLI flag names with dashes)."""
        return [f.name for f in fields(cls)]


DEFAULT_LIMITS = Limits()
