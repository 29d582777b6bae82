"""Console test plumbing: sign a participant in through the one-time link, and a cookie-only browser session."""

from __future__ import annotations

import re
from typing import Any

import aiohttp

from exchange.client import HetexClient

CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


async def one_time_link(client: HetexClient) -> dict[str, Any]:
    """What `hetex login --web` asks for: a signed POST /console/sessions."""
    return await client.request("POST", "/console/sessions", {})


class Browser:
    """A cookie-carrying HTTP session that behaves like a same-origin browser (no redirects followed)."""

    def __init__(self, base_url: str) -> None:
        self.base = base_url
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def close(self) -> None:
        """Close the session."""
        await self.http.close()

    async def get(self, path: str) -> tuple[int, str, Any]:
        """GET a page: status, text, headers."""
        async with self.http.get(self.base + path, allow_redirects=False) as r:
            return r.status, await r.text(), r.headers

    async def post(self, path: str, data: dict[str, str], origin: str | None = "") -> tuple[int, str, Any]:
        """POST a form as a same-origin page would (Origin header = base unless given)."""
        headers = {"Origin": self.base if origin == "" else origin} if origin is not None else {}
        async with self.http.post(self.base + path, data=data, headers=headers, allow_redirects=False) as r:
            return r.status, await r.text(), r.headers

    async def sign_in(self, client: HetexClient) -> dict[str, Any]:
        """Redeem a fresh one-time link of `client`; returns the link answer (session id, role)."""
        link = await one_time_link(client)
        code = link["link"].rsplit("/", 1)[1]
        status, _, headers = await self.post("/login", {"code": code})
        assert status == 303, status
        link["code"] = code
        link["location"] = headers["Location"]
        return link

    async def csrf(self, path: str) -> str:
        """The CSRF token in the forms of a page."""
        status, text, _ = await self.get(path)
        assert status == 200, (status, text[:500])
        found = CSRF.search(text)
        assert found, "no CSRF token on the page"
        return found.group(1)
