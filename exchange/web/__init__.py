"""The web console served by `hetex serve` at `/`: public market and party pages (specs/console.md)."""

from __future__ import annotations

from exchange.web.setup import setup_web

__all__ = ["setup_web"]
