"""Resolve a CRI to the site or pool it names (or its tombstone)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.storage.registration import Pool, Site
from identifiers.cri import parse_cri
from identifiers.errors import NotFoundError


class UnknownCriError(NotFoundError):
    """The CRI is well-formed but names nothing registered here."""

    code = "unknown_cri"


@dataclass
class ResolveService:
    """Looks CRIs up in the registry."""

    sessions: async_sessionmaker[AsyncSession]
    authority: str

    async def resolve(self, text: str) -> dict[str, Any]:
        """The current record of the resource a CRI names; raises for malformed or unknown CRIs."""
        cri = parse_cri(text)
        canonical = str(cri)
        async with self.sessions() as session:
            if cri.kind == "site":
                site = (await session.execute(select(Site).where(Site.cri == canonical))).scalar_one_or_none()
                if site is None:
                    raise UnknownCriError(f"no site {canonical} at authority {self.authority}", field="cri")
                return site_view(site)
            pool_row = (await session.execute(select(Pool, Site).join(Site).where(Pool.cri == canonical))).one_or_none()
            if pool_row is None:
                raise UnknownCriError(f"no pool {canonical} at authority {self.authority}", field="cri")
            pool, site = pool_row
            return pool_view(pool, site)


def site_view(site: Site) -> dict[str, Any]:
    """Public JSON form of a site."""
    return {
        "kind": "site",
        "cri": site.cri,
        "id": site.id,
        "provider_id": site.provider_id,
        "region": site.region,
        "name": site.name,
        "pue": None if site.pue is None else str(site.pue),
        "green_share": None if site.green_share is None else str(site.green_share),
        "interconnect": site.interconnect,
        "status": site.status,
        "last_heartbeat_at": site.last_heartbeat_at,
        "tombstoned_at": site.tombstoned_at,
        "created_at": site.created_at,
    }


def pool_view(pool: Pool, site: Site) -> dict[str, Any]:
    """Public JSON form of a pool."""
    return {
        "kind": "pool",
        "cri": pool.cri,
        "id": pool.id,
        "site_cri": site.cri,
        "provider_id": site.provider_id,
        "region": site.region,
        "model": pool.model,
        "devices": pool.devices,
        "memory_gb": pool.memory_gb,
        "intra_node_link": pool.intra_node_link,
        "nodes": pool.nodes,
        "devices_per_node": pool.devices_per_node,
        "status": pool.status,
        "tombstoned_at": pool.tombstoned_at,
        "created_at": pool.created_at,
    }
