"""RFC 6962/9162 Merkle trees: published probes, reference roots, hasher vectors, generated proofs."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.errors import ProofError
from federation.merkle import (
    EMPTY_ROOT,
    CompactRange,
    InMemoryTree,
    NodeMapSource,
    aligned_subtrees,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_inclusion,
    root_hash,
    verify_consistency,
    verify_inclusion,
)
from tests.federation.conftest import VECTORS

MERKLE = VECTORS / "merkle"
INCLUSION = sorted((MERKLE / "inclusion").rglob("*.json"))
CONSISTENCY = sorted((MERKLE / "consistency").rglob("*.json"))

REFERENCE_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
REFERENCE_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def _b(text: str) -> bytes:
    return base64.b64decode(text)


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def test_probe_counts() -> None:
    assert len(INCLUSION) >= 98 and len(CONSISTENCY) >= 98


@pytest.mark.parametrize("path", INCLUSION, ids=[str(p.relative_to(MERKLE)) for p in INCLUSION])
def test_inclusion_probe(path: Path) -> None:
    d = _load(path)
    args = (_b(d["leafHash"]), d["leafIdx"], d["treeSize"], [_b(p) for p in d["proof"] or []], _b(d["root"]))
    if d["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", CONSISTENCY, ids=[str(p.relative_to(MERKLE)) for p in CONSISTENCY])
def test_consistency_probe(path: Path) -> None:
    d = _load(path)
    args = (d["size1"], d["size2"], [_b(p) for p in d["proof"] or []], _b(d["root1"]), _b(d["root2"]))
    if d["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_happy_probes_are_reproduced_by_generation() -> None:
    # the valid probes are over the reference tree: our generator must produce exactly those proofs
    tree = InMemoryTree.from_data(REFERENCE_LEAVES)
    checked = 0
    for path in INCLUSION + CONSISTENCY:
        d = _load(path)
        if d["wantErr"]:
            continue
        if "leafIdx" in d and d["treeSize"] > 1:
            assert tree.inclusion_proof(d["leafIdx"], d["treeSize"]) == [_b(p) for p in d["proof"]]
            checked += 1
        elif "size1" in d and d["size1"] != d["size2"]:
            assert tree.consistency_proof(d["size1"], d["size2"]) == [_b(p) for p in d["proof"]]
            checked += 1
    assert checked >= 8


@pytest.mark.parametrize("size", range(9))
def test_reference_roots(size: int) -> None:
    leaves = [leaf_hash(d) for d in REFERENCE_LEAVES[:size]]
    assert root_hash(leaves).hex() == REFERENCE_ROOTS[size]
    assert InMemoryTree(leaves).root().hex() == REFERENCE_ROOTS[size]
    assert InMemoryTree.from_data(REFERENCE_LEAVES).root(size).hex() == REFERENCE_ROOTS[size]


def test_hasher_vectors() -> None:
    assert EMPTY_ROOT.hex() == REFERENCE_ROOTS[0]
    assert leaf_hash(b"L123456").hex() == "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
    assert node_hash(b"N123", b"N456").hex() == "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"


def _naive_root(leaves: list[bytes]) -> bytes:
    """RFC 9162 MTH written as the recursive definition (independent of the library code)."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(_naive_root(leaves[:k]), _naive_root(leaves[k:]))


def _flip(proof: list[bytes], item: int, bit: int) -> list[bytes]:
    out = list(proof)
    b = bytearray(out[item])
    b[bit // 8] ^= 1 << (bit % 8)
    out[item] = bytes(b)
    return out


TREE = InMemoryTree(leaf_hash(i.to_bytes(4, "big")) for i in range(300))


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_generated_inclusion_proofs(data: st.DataObject) -> None:
    size = data.draw(st.integers(min_value=1, max_value=TREE.size))
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    root = TREE.root(size)
    assert root == _naive_root([TREE.leaf(i) for i in range(size)])
    proof = TREE.inclusion_proof(index, size)
    verify_inclusion(TREE.leaf(index), index, size, proof, root)
    assert root_from_inclusion(TREE.leaf(index), index, size, proof) == root
    if proof:
        item = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
        bit = data.draw(st.integers(min_value=0, max_value=255))
        with pytest.raises(ProofError):
            verify_inclusion(TREE.leaf(index), index, size, _flip(proof, item, bit), root)
        with pytest.raises(ProofError):
            verify_inclusion(TREE.leaf(index), index, size, proof[:-1], root)
        with pytest.raises(ProofError):
            verify_inclusion(TREE.leaf(index), index, size, [*proof, proof[0]], root)
    with pytest.raises(ProofError):
        verify_inclusion(_flip([TREE.leaf(index)], 0, 0)[0], index, size, proof, root)
    if size > 1:
        other = (index + 1) % size
        with pytest.raises(ProofError):
            verify_inclusion(TREE.leaf(index), other, size, proof, root)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_generated_consistency_proofs(data: st.DataObject) -> None:
    size2 = data.draw(st.integers(min_value=1, max_value=TREE.size))
    size1 = data.draw(st.integers(min_value=1, max_value=size2))
    root1, root2 = TREE.root(size1), TREE.root(size2)
    proof = TREE.consistency_proof(size1, size2)
    verify_consistency(size1, size2, proof, root1, root2)
    if proof:
        item = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
        bit = data.draw(st.integers(min_value=0, max_value=255))
        with pytest.raises(ProofError):
            verify_consistency(size1, size2, _flip(proof, item, bit), root1, root2)
        with pytest.raises(ProofError):
            verify_consistency(size1, size2, proof[:-1], root1, root2)
    with pytest.raises(ProofError):
        verify_consistency(size1, size2, proof, _flip([root1], 0, 7)[0], root2)
    with pytest.raises(ProofError):
        verify_consistency(size1, size2, proof, root1, _flip([root2], 0, 7)[0])


def test_proof_generation_arguments() -> None:
    with pytest.raises(ValueError):
        inclusion_proof(TREE, 5, 5)
    with pytest.raises(ValueError):
        consistency_proof(TREE, 0, 5)
    with pytest.raises(ValueError):
        consistency_proof(TREE, 6, 5)
    assert consistency_proof(TREE, 5, 5) == []


@settings(deadline=None)
@given(st.integers(min_value=0, max_value=5000), st.integers(min_value=0, max_value=5000))
def test_aligned_subtrees(a: int, b: int) -> None:
    start, end = min(a, b), max(a, b)
    parts = aligned_subtrees(start, end)
    pos = start
    for lo, hi in parts:
        n = hi - lo
        assert lo == pos and n > 0 and n & (n - 1) == 0 and lo % n == 0
        pos = hi
    assert pos == end
    if start == 0:
        assert len(parts) == end.bit_count()


class CountingSource:
    """Wraps a source and counts lookups."""

    def __init__(self, inner: InMemoryTree) -> None:
        self.inner, self.calls = inner, 0

    def subtree_hash(self, start: int, end: int) -> bytes:
        self.calls += 1
        return self.inner.subtree_hash(start, end)


def test_proofs_are_logarithmic_in_lookups() -> None:
    big = InMemoryTree(leaf_hash(i.to_bytes(4, "big")) for i in range(1000))
    src = CountingSource(big)
    for index in (0, 499, 998, 999):
        src.calls = 0
        inclusion_proof(src, index, 1000)
        assert src.calls <= 2 * 10
    for size1 in (1, 333, 512, 999):
        src.calls = 0
        consistency_proof(src, size1, 1000)
        assert src.calls <= 2 * 10


@settings(deadline=None)
@given(st.lists(st.binary(max_size=8), max_size=70))
def test_compact_range_and_node_store(entries: list[bytes]) -> None:
    cr = CompactRange()
    nodes: dict[tuple[int, int], bytes] = {}
    for e in entries:
        for level, index, h in cr.append(leaf_hash(e)):
            assert (level, index) not in nodes
            nodes[(level, index)] = h
    leaves = [leaf_hash(e) for e in entries]
    assert cr.size == len(entries)
    assert cr.root() == _naive_root(leaves)
    store = NodeMapSource(nodes)
    restored = CompactRange.from_source(store, len(entries))
    assert restored.root() == cr.root() and restored.hashes == cr.hashes
    restored.append(leaf_hash(b"next"))
    assert restored.root() == _naive_root([*leaves, leaf_hash(b"next")])
    if entries:
        i = len(entries) // 2
        verify_inclusion(leaves[i], i, len(entries), inclusion_proof(store, i, len(entries)), cr.root())


def test_node_store_refuses_unaligned() -> None:
    with pytest.raises(ValueError):
        NodeMapSource({}).subtree_hash(1, 3)
    with pytest.raises(ValueError):
        TREE.subtree_hash(0, 3)
