"""C2SP signed notes and checkpoints: golden vectors, Go interop, round trips, rejections."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.errors import NoteError
from federation.keys import Keyring, SigningKey, parse_signer_key
from federation.note import (
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    open_note,
    parse_checkpoint,
    sign_note,
    verify_checkpoint,
    verify_note,
)
from tests.federation.conftest import VECTORS

GOLDEN = json.loads((VECTORS / "note" / "hetex-note-vectors.json").read_text(encoding="utf-8"))
GO = json.loads((VECTORS / "note" / "go-note-example.json").read_text(encoding="utf-8"))
LOG = NoteSigner(GOLDEN["keys"]["log"]["name"], SigningKey.from_seed(bytes.fromhex(GOLDEN["keys"]["log"]["seed"])))
WITNESS = NoteSigner(
    GOLDEN["keys"]["witness"]["name"], SigningKey.from_seed(bytes.fromhex(GOLDEN["keys"]["witness"]["seed"]))
)


def _reason(note: str, verifiers: object) -> str:
    with pytest.raises(NoteError) as info:
        verify_note(note, verifiers)  # type: ignore[arg-type]
    return info.value.reason


def test_golden_keys() -> None:
    assert LOG.verifier.to_string() == GOLDEN["keys"]["log"]["verifier_key"]
    assert WITNESS.verifier.to_string() == GOLDEN["keys"]["witness"]["verifier_key"]
    name, key = parse_signer_key(GOLDEN["keys"]["log"]["signer_key"])
    assert name == LOG.name and key.seed() == LOG.key.seed()


def test_golden_checkpoint_signs_byte_for_byte() -> None:
    cp = Checkpoint(
        GOLDEN["checkpoint"]["origin"],
        GOLDEN["checkpoint"]["size"],
        base64.b64decode(GOLDEN["checkpoint"]["root"]),
    )
    assert cp.to_text() == GOLDEN["text"]
    assert cp.sign([LOG]) == GOLDEN["note"]
    assert sign_note(GOLDEN["text"], [LOG, WITNESS]) == GOLDEN["cosigned_note"]
    verifier = NoteVerifier.from_string(GOLDEN["keys"]["log"]["verifier_key"])
    assert verify_checkpoint(GOLDEN["note"], [verifier], origin=cp.origin) == cp


def test_go_example_interop() -> None:
    name, key = parse_signer_key(GO["signer_key"])
    assert sign_note(GO["text"], [NoteSigner(name, key)]) == GO["note"]
    assert verify_note(GO["note"], [NoteVerifier.from_string(GO["verifier_key"])]) == GO["text"]
    tampered = GO["note"].replace("cryptography", "cryptographY")
    assert _reason(tampered, [NoteVerifier.from_string(GO["verifier_key"])]) == "bad_signature"


def test_unknown_keys_are_ignored_but_one_known_is_needed() -> None:
    note = GOLDEN["cosigned_note"]
    opened = open_note(note, [LOG.verifier])
    assert [s.name for s in opened.verified] == [LOG.name]
    assert [s.name for s in opened.unverified] == [WITNESS.name]
    assert verify_note(note, [WITNESS.verifier]) == GOLDEN["text"]
    assert len(open_note(note, [LOG.verifier, WITNESS.verifier]).verified) == 2
    assert _reason(note, []) == "no_known_signature"
    stranger = NoteSigner(LOG.name, SigningKey.generate())  # same name, other key: another key id
    assert _reason(note, [stranger.verifier]) == "no_known_signature"


def test_verifier_forms() -> None:
    note = GOLDEN["note"]
    assert verify_note(note, {LOG.name: LOG.key.public}) == GOLDEN["text"]
    ring = Keyring()
    ring.add_named(LOG.name, LOG.key.public)
    assert verify_note(note, ring) == GOLDEN["text"]


def test_known_key_rules() -> None:
    note = GOLDEN["note"]
    sig_line = note.split("\n\n", 1)[1]
    assert _reason(note + sig_line, [LOG.verifier]) == "duplicate_signature"
    bad_sig = note.replace("/R7tXn9X1zWXK", "/R7tXn9X1zWXL")
    assert _reason(bad_sig, [LOG.verifier]) == "bad_signature"
    assert _reason(note.replace("\n8\n", "\n9\n"), [LOG.verifier]) == "bad_signature"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda n: n.replace("\n\n", "\n"),  # no blank line
        lambda n: n[:-1],  # no final newline
        lambda n: n.replace("\u2014 ", "- "),  # wrong dash
        lambda n: n.replace("\u2014 hetex.example/log ", "\u2014 hetex.example/log  "),
        lambda n: n.replace("\u2014 hetex.example/log ", "\u2014  "),
        lambda n: n + "\n",  # empty signature line
        lambda n: n.replace("=\n", "=!\n"),  # bad base64
        lambda n: n.replace("\n8\n", "\n8\r\n"),  # control character in text
        lambda n: n + "\u2014 x AAAA\n",  # signature shorter than key id + 1 byte
    ],
)
def test_malformed_notes(mangle: Callable[[str], str]) -> None:
    assert _reason(mangle(GOLDEN["note"]), [LOG.verifier]) == "malformed"


def test_too_many_signatures() -> None:
    extra = "".join(f"\u2014 k{i} AAAAAAAA\n" for i in range(101))
    assert _reason(GOLDEN["note"] + extra, [LOG.verifier]) == "malformed"


def test_sign_refuses_bad_text() -> None:
    with pytest.raises(NoteError):
        sign_note("no newline", [LOG])
    with pytest.raises(NoteError):
        sign_note("tab\tchar\n", [LOG])


note_text = st.lists(
    st.text(alphabet=st.characters(min_codepoint=0x20, blacklist_categories=["Cs"]), max_size=30), min_size=1
).map(lambda lines: "".join(line + "\n" for line in lines))


@settings(deadline=None)
@given(text=note_text)
def test_round_trip(text: str) -> None:
    note = sign_note(text, [LOG, WITNESS])
    assert verify_note(note, [LOG.verifier]) == text
    assert verify_note(note, [WITNESS.verifier]) == text


@settings(deadline=None)
@given(
    size=st.integers(min_value=0, max_value=2**63),
    root=st.binary(min_size=32, max_size=32),
    ext=st.lists(st.text(alphabet="abc XYZ-09", min_size=1, max_size=10).filter(str.strip), max_size=3),
)
def test_checkpoint_round_trip(size: int, root: bytes, ext: list[str]) -> None:
    cp = Checkpoint("example.org/log", size, root, tuple(ext))
    assert parse_checkpoint(cp.to_text()) == cp
    assert verify_checkpoint(cp.sign([LOG]), [LOG.verifier]) == cp


@pytest.mark.parametrize(
    "text",
    [
        "origin\n08\nAAAA\n",
        "origin\n-1\nAAAA\n",
        "origin\n1\n",
        "origin\n1\n!!\n",
        "origin\n1\nAAAA",
        "\n1\nAAAA\n",
        "o\n1\nAAAA\n\n",
    ],
)
def test_bad_checkpoints(text: str) -> None:
    with pytest.raises(NoteError):
        parse_checkpoint(text)


def test_checkpoint_origin_checked() -> None:
    with pytest.raises(NoteError) as info:
        verify_checkpoint(GOLDEN["note"], [LOG.verifier], origin="other.example/log")
    assert info.value.reason == "wrong_origin"
