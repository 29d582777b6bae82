"""Open the database for a CLI verb only when it exists, is reachable and is migrated: otherwise one line
naming the database and the fix, and no file left behind (SQLite would create an empty file on connect)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from exchange.cli.errors import EXIT_UNAVAILABLE, CliError

if TYPE_CHECKING:
    from exchange.composition import Services
    from exchange.settings import Settings

FIX = "pass --database-url or set HETEX_DATABASE_URL"


def shown_url(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases and :memory:)."""
    if not url.startswith("sqlite") or ":memory:" in url:
        return None
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    return Path(database) if database else None


async def check_database(url: str, *, need_head: bool = True) -> str | None:
    """Raise CliError unless the database at `url` exists, answers, and (need_head) is at the head revision."""
    from exchange.storage.engine import make_engine
    from exchange.storage.migrate import engine_revision, head_revision

    where = shown_url(url)
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        raise CliError(
            f"no database at {where} (file {path} does not exist): {FIX}, or create it with `hetex db upgrade`",
            EXIT_UNAVAILABLE,
        )
    engine = make_engine(url)
    try:
        current = await engine_revision(engine)
    except Exception as exc:
        text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise CliError(
            f"cannot open the database at {where}: {text[0] if text else type(exc).__name__} ({FIX})",
            EXIT_UNAVAILABLE,
        ) from None
    finally:
        await engine.dispose()
    head = head_revision()
    if need_head and current != head:
        state = "empty (never migrated)" if current is None else f"at revision {current}"
        raise CliError(
            f"the database at {where} is {state} but this hetex needs {head}: run `hetex db upgrade`",
            EXIT_UNAVAILABLE,
        )
    return current


async def open_services(settings: Settings) -> Services:
    """build_services after check_database."""
    from exchange.composition import build_services

    await check_database(settings.database_url)
    return await build_services(settings)
