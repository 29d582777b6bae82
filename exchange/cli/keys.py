"""`hetex keys new`: create an Ed25519 key pair for a participant (private PEM 0600 + public base64)."""

from __future__ import annotations

import argparse
from pathlib import Path

from exchange.cli.common import CliError, print_json
from exchange.keyid import participant_key_id
from federation.keys import generate_keypair_files, load_public_key


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `keys` verbs."""
    p = sub.add_parser("keys", help="participant key pairs")
    keys_sub = p.add_subparsers(dest="keys_command", required=True)
    new = keys_sub.add_parser("new", help="create <name>.pem (private, mode 0600) and <name>.pub in DIR")
    new.add_argument("--out", required=True, help="directory for the key files (created if missing)")
    new.add_argument("--name", default="participant", help="file name stem (default: participant)")
    new.add_argument("--json", action="store_true")
    new.set_defaults(func=run_new)


def run_new(args: argparse.Namespace) -> int:
    """Write the key pair and print the paths, public key and key id."""
    try:
        private, public = generate_keypair_files(Path(args.out), args.name)
    except FileExistsError as exc:
        raise CliError(f"refusing to overwrite existing key file {exc}") from None
    except OSError as exc:
        raise CliError(f"cannot write keys to {args.out}: {exc.strerror or exc}") from None
    key = load_public_key(public)
    out = {
        "private_key_file": str(private),
        "public_key_file": str(public),
        "public_key": key.to_base64(),
        "key_id": participant_key_id(key),
    }
    if args.json:
        print_json(out)
    else:
        print(f"private key  {private}  (keep secret)\npublic key   {public}\n{out['public_key']}")
        print(f"key id       {out['key_id']}")
    return 0
