"""`hetex ledger checkpoint|prove|verify|entry`: read and check the transparency log, over HTTP or the database.

`prove` needs no key: leaf hashes and proofs are public. `entry` reads a record's bytes with a signed GET (a
party to the record, the regulator or the operator: specs/signing.md section 9) and checks them against the
public leaf hash.

Exit codes: 0 ok, 1 the log (or a proof) does not verify (each problem named on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from exchange.cli.client_common import add_client_flags, with_client
from exchange.cli.common import CliError, add_db_flag, print_json, settings_from
from exchange.cli.dbcheck import open_services
from exchange.client import HetexClient
from exchange.composition import Services
from exchange.services.ledger import LogProblem
from federation.errors import NoteError, ProofError
from federation.keys import KeyFormatError, Keyring, VerifyKey
from federation.merkle import leaf_hash, verify_consistency, verify_inclusion
from federation.note import NoteVerifier, verify_checkpoint

T = TypeVar("T")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `ledger` verbs."""
    p = sub.add_parser("ledger", help="transparency log: checkpoints, proofs, verification")
    lsub = p.add_subparsers(dest="ledger_command", required=True)

    cp = lsub.add_parser("checkpoint", help="print the latest signed checkpoint (signing one if the log grew)")
    _add_source(cp)
    cp.add_argument("--out", type=Path, help="also write the note to this file")
    cp.set_defaults(func=run_checkpoint)

    prove = lsub.add_parser("prove", help="inclusion proof of one entry, verified against the signed checkpoint")
    _add_source(prove)
    prove.add_argument("--index", type=int, required=True, help="log index of the entry")
    prove.set_defaults(func=run_prove)

    entry = lsub.add_parser("entry", help="one log record (signed read: a party, the regulator or the operator)")
    entry.add_argument("--index", type=int, required=True, help="log index of the entry")
    add_client_flags(entry, json_flag=False)
    entry.set_defaults(func=run_entry)

    verify = lsub.add_parser("verify", help="verify the log (database: recompute everything) and consistency")
    _add_source(verify)
    verify.add_argument("--from", dest="from_file", type=Path, help="an earlier checkpoint note file")
    verify.set_defaults(func=run_verify)


def _add_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="exchange base URL (HTTP mode); default: the database")
    p.add_argument("--key", action="append", default=[], help="trusted C2SP verifier key (HTTP mode; repeatable)")
    p.add_argument("--key-dir", help="directory of the exchange signing key (database mode)")
    add_db_flag(p)


def _with_services(args: argparse.Namespace, fn: Callable[[Services], Awaitable[T]]) -> T:
    settings = settings_from(args)

    async def go() -> T:
        svc = await open_services(settings)
        try:
            return await fn(svc)
        finally:
            await svc.close()

    return asyncio.run(go())


async def _http_get(url: str, *, text: bool = False) -> Any:
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http, http.get(url) as resp:
        body = await resp.text()
        if resp.status != 200:
            raise CliError(f"GET {url}: HTTP {resp.status}: {body[:300]}")
        if text:
            return body
        import json

        return json.loads(body)


async def _http_keyring(base: str, pinned: list[str]) -> Keyring:
    ring = Keyring()
    if pinned:
        for text in pinned:
            try:
                v = NoteVerifier.from_string(text)
            except KeyFormatError as exc:
                raise CliError(f"--key {text!r}: {exc.message}") from None
            ring.add_named(v.name, v.key)
        return ring
    data = await _http_get(f"{base}/v1/ledger/keys")
    for k in data["keys"]:
        if k["status"] != "revoked":
            ring.add(k["key_id"], VerifyKey.from_base64(k["public_key"]), name=k["name"])
    return ring


def _report(problems: list[str]) -> int:
    for problem in problems:
        print(f"PROBLEM {problem}", file=sys.stderr)
    return 1 if problems else 0


def run_checkpoint(args: argparse.Namespace) -> int:
    """Print the signed checkpoint note."""
    if args.url:
        note = asyncio.run(_http_get(args.url.rstrip("/") + "/v1/ledger/checkpoint", text=True))
    else:

        async def go(svc: Services) -> str:
            return (await svc.ledger.checkpoint()).note

        note = _with_services(args, go)
    if args.out:
        args.out.write_text(note, encoding="utf-8")
    sys.stdout.write(note)
    return 0


def run_prove(args: argparse.Namespace) -> int:
    """Print an inclusion proof of --index and check it against the signed latest checkpoint."""
    if args.url:
        base = args.url.rstrip("/")

        async def fetch() -> tuple[str, Keyring, dict[str, Any]]:
            note = await _http_get(f"{base}/v1/ledger/checkpoint", text=True)
            ring = await _http_keyring(base, args.key)
            size = note.split("\n")[1]
            proof = await _http_get(f"{base}/v1/ledger/proofs/inclusion?index={args.index}&size={size}")
            return note, ring, proof

        note, ring, proof = asyncio.run(fetch())
    else:

        async def go(svc: Services) -> tuple[str, Keyring, dict[str, Any]]:
            cp = await svc.ledger.checkpoint()
            ring = await svc.identity.keyring()
            return cp.note, ring, (await svc.ledger.inclusion_proof(args.index, cp.size)).to_json()

        note, ring, proof = _with_services(args, go)
    problems: list[str] = []
    try:
        cp = verify_checkpoint(note, ring)
        verify_inclusion(
            base64.b64decode(proof["leaf_hash"]),
            proof["index"],
            cp.size,
            [base64.b64decode(h) for h in proof["hashes"]],
            cp.root,
        )
    except (NoteError, ProofError) as exc:
        problems.append(f"entry {args.index}: {exc.message}")
    print_json({"proof": proof, "checkpoint": note, "verified": not problems})
    return _report(problems)


def run_entry(args: argparse.Namespace) -> int:
    """Print one log record (signed GET) after checking its bytes hash to the public leaf hash."""
    if args.index < 0:
        raise CliError("--index must be >= 0")

    async def call(client: HetexClient) -> tuple[dict[str, Any], dict[str, Any]]:
        entry = await client.request("GET", f"/v1/ledger/entries/{args.index}")
        proof = await client.request("GET", f"/v1/ledger/proofs/inclusion?index={args.index}", signed=False)
        return entry, proof

    entry, proof = with_client(args, call)
    problems = []
    if leaf_hash(base64.b64decode(entry["payload"])) != base64.b64decode(proof["leaf_hash"]):
        problems.append(f"entry {args.index}: the record does not hash to the public leaf hash")
    print_json({"entry": entry, "leaf_hash_matches": not problems})
    return _report(problems)


def _read_note(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None


def run_verify(args: argparse.Namespace) -> int:
    """Database: recompute the whole log; with --from, also consistency with that checkpoint. HTTP: proofs."""
    earlier = [_read_note(args.from_file)] if args.from_file else []
    if args.url:
        code = _report(asyncio.run(_verify_http(args.url.rstrip("/"), args.key, earlier)))
        if code == 0 and not args.key:
            # keys fetched from the server being checked prove only that it agrees with itself
            print("UNTRUSTED: verified only against keys the same server published; pass --key to pin them")
            return 3
        return code

    async def go(svc: Services) -> tuple[list[LogProblem], int, int]:
        report = await svc.ledger.verify_log(earlier=earlier)
        problems = list(report.problems)
        if earlier and report.ok:
            problems.extend(await _proof_problems(svc, earlier[0]))
        return problems, report.entries_checked, report.checkpoints_checked

    problems, entries, checkpoints = _with_services(args, go)
    code = _report([p.describe() for p in problems])
    if code == 0:
        print(f"ok: {entries} entries and {checkpoints} checkpoints verified")
    return code


async def _proof_problems(svc: Services, note: str) -> list[LogProblem]:
    """Consistency of an earlier checkpoint with the latest one, by proof (what a remote auditor checks)."""
    ring = await svc.identity.keyring()
    old = verify_checkpoint(note, ring)
    latest = await svc.ledger.checkpoint()
    if old.size == 0:
        return []
    proof = await svc.ledger.consistency_proof(old.size, latest.size)
    try:
        verify_consistency(old.size, latest.size, proof.hashes, old.root, latest.root)
    except ProofError as exc:
        return [LogProblem("inconsistent", f"checkpoint {old.size} -> {latest.size}: {exc.message}", 0, old.size)]
    return []


async def _verify_http(base: str, pinned: list[str], earlier: list[str]) -> list[str]:
    ring = await _http_keyring(base, pinned)
    note = await _http_get(f"{base}/v1/ledger/checkpoint", text=True)
    try:
        latest = verify_checkpoint(note, ring)
    except NoteError as exc:
        return [f"latest checkpoint: {exc.message}"]
    problems: list[str] = []
    for old_note in earlier:
        try:
            old = verify_checkpoint(old_note, ring)
        except NoteError as exc:
            problems.append(f"earlier checkpoint: {exc.message}")
            continue
        if old.size == 0:
            continue
        if old.size > latest.size:
            problems.append(f"earlier checkpoint size {old.size} is beyond the latest {latest.size}")
            continue
        proof = await _http_get(f"{base}/v1/ledger/proofs/consistency?from={old.size}&to={latest.size}")
        try:
            verify_consistency(
                old.size, latest.size, [base64.b64decode(h) for h in proof["hashes"]], old.root, latest.root
            )
        except ProofError as exc:
            problems.append(f"entries 0..{old.size - 1}: not consistent with the latest checkpoint: {exc.message}")
    if not problems:
        how = "against the pinned key" if pinned else "against the server's own keys (not pinned)"
        print(f"ok: checkpoint of size {latest.size} verified {how}" + (" and consistent" if earlier else ""))
    return problems
