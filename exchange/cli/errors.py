"""The CLI's one error path: every failure becomes one or two lines on stderr and a documented exit code."""

from __future__ import annotations

import argparse
import sys

EXIT_OK = 0
EXIT_FAILURE = 1  # the command ran and failed (problems found, the exchange failed, an internal error)
EXIT_USAGE = 2  # usage or bad input, or the exchange refused the request (4xx)
EXIT_UNTRUSTED = 3  # `audit verify`: the bundle is consistent but not signed by a trusted key
EXIT_UNAVAILABLE = 4  # the exchange or the database cannot be reached (retry later or fix the address)
EXIT_INTERRUPTED = 130

EXIT_CODES = (
    (EXIT_OK, "success"),
    (EXIT_FAILURE, "the command failed (problems found, server error, internal error)"),
    (EXIT_USAGE, "usage or bad input, or the exchange refused the request"),
    (EXIT_UNTRUSTED, "audit bundle not signed by a trusted key"),
    (EXIT_UNAVAILABLE, "the exchange or the database cannot be reached"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
)
EXIT_CODES_HELP = "exit codes:\n" + "\n".join(f"  {code:<4} {what}" for code, what in EXIT_CODES)


class CliError(Exception):
    """A user-facing CLI failure: printed without a traceback; exit code 2 unless given."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _db_failure(exc: BaseException) -> str | None:
    """A one-line description of a database driver failure, or None when `exc` is not one."""
    module = type(exc).__module__ or ""
    if not module.startswith(("sqlalchemy", "asyncpg", "sqlite3", "aiosqlite")):
        return None
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "no such table" in text or ("does not exist" in text and "relation" in text):
        return f"the database is not migrated ({text}): run `hetex db upgrade`"
    return f"database error: {text}"


def report_failure(exc: BaseException, args: argparse.Namespace | None, *, verbose: bool) -> int:
    """Print one message for `exc` (a traceback too when verbose) and return the exit code."""
    from identifiers.errors import HetexError

    if verbose:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, CliError):
        print(f"hetex: error: {exc}", file=sys.stderr)
        return exc.exit_code
    status = getattr(exc, "status", None)
    if isinstance(exc, HetexError):
        where = f" ({exc.field})" if exc.field else ""
        problem = getattr(exc, "problem", None) or {}
        errors = problem.get("errors") if isinstance(problem, dict) else None
        if isinstance(errors, list) and len(errors) > 1:  # every validation error with its field path
            print(f"hetex: error: {len(errors)} problems in the request:", file=sys.stderr)
            for err in errors:
                print(f"  {err.get('field')}: {err.get('message')}", file=sys.stderr)
        else:
            print(f"hetex: error{where}: {exc.message}", file=sys.stderr)
        if isinstance(status, int) and status >= 500:
            return EXIT_FAILURE
        return EXIT_USAGE
    db = _db_failure(exc)
    if db is not None:
        print(f"hetex: error: {db}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if exc.filename else ""
        print(f"hetex: error:{where} {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"hetex: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
    if not verbose:
        print("hetex: run again with -v for the traceback, and please report it", file=sys.stderr)
    return EXIT_FAILURE
