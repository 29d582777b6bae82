"""RFC 6962 / RFC 9162 Merkle trees: hashing, proofs over a subtree-hash source, verification (pure stdlib).

Hashes: leaf = SHA-256(0x00 || data), node = SHA-256(0x01 || left || right), empty tree = SHA-256("").

Storage model (what the ledger keeps so that every proof is O(log n) lookups): node (level, index)
is the hash of the perfect subtree over leaves [index * 2**level, (index + 1) * 2**level). Appending
leaf i completes node (0, i) and then (l, i >> l) for l = 1 .. trailing_ones(i) -- exactly the
entries CompactRange.append returns. With those rows stored, `subtree_hash(start, end)` for an
aligned power-of-two range is the single row (log2(end - start), start >> log2(end - start)), and
inclusion or consistency proofs need at most about 2 * log2(n) such lookups (only the right edge of
the tree is not a stored perfect subtree; it is folded from at most log2(n) stored rows).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from federation.errors import ProofError

EMPTY_ROOT = hashlib.sha256(b"").digest()
HASH_SIZE = 32


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right); inputs of any length."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _largest_pow2_below(n: int) -> int:
    """Largest power of two strictly less than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """Merkle tree hash (MTH) of a list of leaf hashes, computed bottom-up in O(n)."""
    if not leaf_hashes:
        return EMPTY_ROOT
    cr = CompactRange()
    for h in leaf_hashes:
        cr.append(h)
    return cr.root()


class HashSource(Protocol):
    """Anything that returns the hash of an aligned perfect subtree of leaves [start, end).

    Callers only ask for ranges where end - start is a power of two and start is a multiple of it.
    """

    def subtree_hash(self, start: int, end: int) -> bytes:
        """Hash of the perfect subtree over leaves [start, end)."""
        ...


def aligned_subtrees(start: int, end: int) -> list[tuple[int, int]]:
    """Split [start, end) into maximal aligned power-of-two ranges, left to right.

    For start == 0 these are the perfect subtrees whose hashes form the compact range (frontier) of
    a tree of size `end`, largest first.
    """
    if not 0 <= start <= end:
        raise ValueError("need 0 <= start <= end")
    out: list[tuple[int, int]] = []
    while start < end:
        size = (start & -start) if start else 1 << (end.bit_length() - 1)
        while start + size > end:
            size >>= 1
        out.append((start, start + size))
        start += size
    return out


def range_hash(source: HashSource, start: int, end: int) -> bytes:
    """MTH of leaves [start, end) as a standalone tree, using only aligned subtree lookups."""
    n = end - start
    if n <= 0:
        if n == 0:
            return EMPTY_ROOT
        raise ValueError("need start <= end")
    if _is_pow2(n) and start % n == 0:
        return source.subtree_hash(start, end)
    k = _largest_pow2_below(n)
    return node_hash(range_hash(source, start, start + k), range_hash(source, start + k, end))


def tree_root(source: HashSource, size: int) -> bytes:
    """Root hash of the first `size` leaves of a source."""
    return range_hash(source, 0, size)


def inclusion_proof(source: HashSource, index: int, size: int) -> list[bytes]:
    """RFC 9162 PATH(index, D[size]): sibling hashes from the leaf upwards."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of size {size}")
    path: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _largest_pow2_below(hi - lo)
        if index < lo + k:
            path.append(range_hash(source, lo + k, hi))
            hi = lo + k
        else:
            path.append(range_hash(source, lo, lo + k))
            lo += k
    path.reverse()
    return path


def consistency_proof(source: HashSource, size1: int, size2: int) -> list[bytes]:
    """RFC 9162 PROOF(size1, D[size2]) for 0 < size1 <= size2 (empty when the sizes are equal)."""
    if not 0 < size1 <= size2:
        raise ValueError("a consistency proof needs 0 < size1 <= size2")
    proof: list[bytes] = []
    lo, hi, m, complete = 0, size2, size1, True
    while m != hi - lo:
        k = _largest_pow2_below(hi - lo)
        if m <= k:
            proof.append(range_hash(source, lo + k, hi))
            hi = lo + k
        else:
            proof.append(range_hash(source, lo, lo + k))
            lo += k
            m -= k
            complete = False
    if not complete:
        proof.append(range_hash(source, lo, hi))
    proof.reverse()
    return proof


# ---------------------------------------------------------------------------------------------------
# verification (RFC 9162 sections 2.1.3.2 and 2.1.4.2)


def _check_hashes(proof: Sequence[bytes]) -> None:
    if any(len(p) != HASH_SIZE for p in proof):
        raise ProofError("bad_hash_size", f"every proof hash is {HASH_SIZE} bytes")


def root_from_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root implied by an inclusion proof; raise ProofError if the proof has the wrong shape."""
    if not 0 <= index < size:
        raise ProofError("index_out_of_range", f"leaf index {index} is not in a tree of size {size}")
    if len(leaf) != HASH_SIZE:
        raise ProofError("bad_hash_size", f"a leaf hash is {HASH_SIZE} bytes")
    _check_hashes(proof)
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("wrong_proof_size", "inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("wrong_proof_size", "inclusion proof is too short")
    return r


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Return None if `proof` shows leaf hash `leaf` at `index` in the tree of `size` with `root`."""
    computed = root_from_inclusion(leaf, index, size, proof)
    if not hmac.compare_digest(computed, root):
        raise ProofError("root_mismatch", "inclusion proof does not lead to the root")


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """Return None if `proof` shows the tree (size1, root1) is a prefix of (size2, root2), else raise.

    Policy (transparency-dev): size1 == 0 always fails; size1 > size2 fails; equal sizes need an
    empty proof and equal roots.
    """
    if size1 < 0 or size2 < 0 or size1 > size2:
        raise ProofError("bad_sizes", f"cannot prove {size1} -> {size2}")
    if size1 == 0:
        raise ProofError("bad_sizes", "consistency from an empty tree proves nothing")
    if size1 == size2:
        if proof:
            raise ProofError("wrong_proof_size", "equal sizes need an empty proof")
        if not hmac.compare_digest(root1, root2):
            raise ProofError("root_mismatch", "equal sizes with different roots")
        return
    if not proof:
        raise ProofError("wrong_proof_size", "empty consistency proof")
    _check_hashes(proof)
    path = list(proof)
    if _is_pow2(size1):
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("wrong_proof_size", "consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("wrong_proof_size", "consistency proof is too short")
    if not hmac.compare_digest(fr, root1):
        raise ProofError("root_mismatch", "consistency proof does not lead to the first root")
    if not hmac.compare_digest(sr, root2):
        raise ProofError("root_mismatch", "consistency proof does not lead to the second root")


# ---------------------------------------------------------------------------------------------------
# compact range (frontier) and in-memory trees


class CompactRange:
    """The frontier of a growing tree: hashes of the maximal perfect subtrees of [0, size).

    append() is O(log n) and returns the nodes it completed as (level, index, hash); a store that
    keeps all of them can answer every aligned subtree_hash with one lookup (see module docstring).
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._hashes: list[bytes] = []

    @classmethod
    def from_frontier(cls, size: int, hashes: Sequence[bytes]) -> CompactRange:
        """Restore from the hashes of aligned_subtrees(0, size), largest first."""
        if len(hashes) != size.bit_count():
            raise ValueError(f"a tree of size {size} has {size.bit_count()} frontier hashes")
        cr = cls()
        cr._size = size
        cr._hashes = list(hashes)
        return cr

    @classmethod
    def from_source(cls, source: HashSource, size: int) -> CompactRange:
        """Restore the frontier of size `size` with bit_count(size) lookups."""
        return cls.from_frontier(size, [source.subtree_hash(a, b) for a, b in aligned_subtrees(0, size)])

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    @property
    def hashes(self) -> list[bytes]:
        """Frontier hashes, largest subtree first (a copy)."""
        return list(self._hashes)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf hash; return the completed nodes (level, index, hash), leaf node first."""
        index = self._size
        completed = [(0, index, leaf)]
        h = leaf
        level = 0
        while (index >> level) & 1:
            h = node_hash(self._hashes.pop(), h)
            level += 1
            completed.append((level, index >> level, h))
        self._hashes.append(h)
        self._size += 1
        return completed

    def root(self) -> bytes:
        """Root hash of the current tree."""
        if not self._hashes:
            return EMPTY_ROOT
        r = self._hashes[-1]
        for h in reversed(self._hashes[:-1]):
            r = node_hash(h, r)
        return r


class NodeMapSource:
    """HashSource over a mapping (level, index) -> hash, the layout a database table would use."""

    def __init__(self, nodes: Mapping[tuple[int, int], bytes]) -> None:
        self.nodes = nodes

    def subtree_hash(self, start: int, end: int) -> bytes:
        """One lookup of the node covering [start, end)."""
        n = end - start
        if not _is_pow2(n) or start % n:
            raise ValueError(f"[{start}, {end}) is not an aligned power-of-two range")
        level = n.bit_length() - 1
        try:
            return self.nodes[(level, start >> level)]
        except KeyError as exc:
            raise ValueError(f"no stored node for [{start}, {end})") from exc


class InMemoryTree:
    """An append-only tree held in memory with every perfect-subtree node, so lookups are O(1)."""

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = []
        self._range = CompactRange()
        for h in leaf_hashes:
            self.append(h)

    @classmethod
    def from_data(cls, entries: Iterable[bytes]) -> InMemoryTree:
        """Build from raw entries (leaf-hashing each)."""
        return cls(leaf_hash(e) for e in entries)

    def append(self, leaf: bytes) -> int:
        """Add a leaf hash; return its index."""
        index = self._range.size
        for level, _idx, h in self._range.append(leaf):
            if level == len(self._levels):
                self._levels.append([])
            self._levels[level].append(h)
        return index

    @property
    def size(self) -> int:
        """Number of leaves."""
        return self._range.size

    def leaf(self, index: int) -> bytes:
        """The leaf hash at `index`."""
        return self._levels[0][index]

    def subtree_hash(self, start: int, end: int) -> bytes:
        """Hash of an aligned perfect subtree: one list lookup."""
        n = end - start
        if not _is_pow2(n) or start % n or end > self.size:
            raise ValueError(f"[{start}, {end}) is not an aligned power-of-two range of this tree")
        level = n.bit_length() - 1
        return self._levels[level][start >> level]

    def root(self, size: int | None = None) -> bytes:
        """Root of the whole tree, or of its first `size` leaves."""
        if size is None:
            return self._range.root()
        if not 0 <= size <= self.size:
            raise ValueError("size out of range")
        return tree_root(self, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Inclusion proof of leaf `index` in the tree of `size` (default: current size)."""
        return inclusion_proof(self, index, self.size if size is None else size)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """Consistency proof from size1 to size2 (default: current size)."""
        return consistency_proof(self, size1, self.size if size2 is None else size2)
