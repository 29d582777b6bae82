"""Compute resource identifiers (CRI): grammar, NFKC input normalization, ISO 7064 check, minting.

Format (specs/cri.abnf): ``CRI1:<authority>:<region>:<operator>:<site>[:<pool>:<model>]:<check>``.
Parsing never corrects input: a bad CRI raises `CriError` whose `reason` names the broken rule.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Container
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import pycountry
from stdnum.iso7064 import mod_37_36

from identifiers.crockford import is_code, random_code
from identifiers.errors import CriError

PREFIX = "CRI1"
SEPARATOR = ":"
CODE_MIN, CODE_MAX = 2, 8
SITE_CODE_LENGTH = 4
POOL_CODE_LENGTH = 6
SITE_SEGMENTS = 6
POOL_SEGMENTS = 8

CHECK_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_AUTHORITY_RE = re.compile(r"[A-Z0-9]{1,8}")
_REGION_RE = re.compile(r"[A-Z]{2}-[A-Z0-9]{1,3}")
MODEL_MAX = 24
_MODEL_RE = re.compile(r"[A-Z]{2,4}(?:-[A-Z0-9]{1,10}){1,3}")
_INPUT_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789:-")

Kind = Literal["site", "pool"]


def is_model_code(code: str) -> bool:
    """True when `code` is a well-formed catalogue model code (vendor tag, then 1-3 hyphenated parts)."""
    return isinstance(code, str) and len(code) <= MODEL_MAX and _MODEL_RE.fullmatch(code) is not None


@lru_cache(maxsize=512)
def is_known_region(code: str) -> bool:
    """True when `code` is an ISO 3166-2 subdivision code known to pycountry."""
    return pycountry.subdivisions.get(code=code) is not None


def check_character(payload: str) -> str:
    """ISO 7064 MOD 37-36 check character over `payload` with ':' and '-' separators removed."""
    compact = payload.replace(SEPARATOR, "").replace("-", "")
    return mod_37_36.calc_check_digit(compact, alphabet=CHECK_ALPHABET)


def _validate_segments(
    authority: str, region: str, operator: str, site: str, pool: str | None, model: str | None
) -> None:
    """Raise CriError for the first segment that breaks the grammar (canonical upper-case form)."""
    if not _AUTHORITY_RE.fullmatch(authority):
        raise CriError(f"authority {authority!r} must be 1-8 characters of A-Z and 0-9", reason="bad_authority")
    if not _REGION_RE.fullmatch(region):
        raise CriError(
            f"region {region!r} must be an ISO 3166-2 code like CN-SH (country, '-', 1-3 characters)",
            reason="bad_region",
        )
    if not is_known_region(region):
        raise CriError(f"region {region!r} is not an ISO 3166-2 subdivision", reason="unknown_region")
    for name, value in (("operator", operator), ("site", site)):
        if not is_code(value, CODE_MIN, CODE_MAX):
            raise CriError(
                f"{name} {value!r} must be 2-8 Crockford base32 characters (0-9, A-Z without I, L, O, U)",
                reason=f"bad_{name}",
            )
    if (pool is None) != (model is None):
        raise CriError("a pool CRI needs both a pool code and a model code", reason="bad_segment_count")
    if pool is not None and not is_code(pool, CODE_MIN, CODE_MAX):
        raise CriError(
            f"pool {pool!r} must be 2-8 Crockford base32 characters (0-9, A-Z without I, L, O, U)",
            reason="bad_pool",
        )
    if model is not None and not is_model_code(model):
        raise CriError(f"model {model!r} must be a catalogue code like NV-H100-SXM or HW-910B3", reason="bad_model")


@dataclass(frozen=True, slots=True)
class Cri:
    """A parsed, canonical compute resource identifier: a site, or a pool of one accelerator model."""

    authority: str
    region: str
    operator: str
    site: str
    pool: str | None = None
    model: str | None = None

    def __post_init__(self) -> None:
        """Refuse to construct a CRI whose segments break the grammar."""
        _validate_segments(self.authority, self.region, self.operator, self.site, self.pool, self.model)

    @property
    def kind(self) -> Kind:
        """'site' or 'pool'."""
        return "site" if self.pool is None else "pool"

    @property
    def payload(self) -> str:
        """Everything before the check character, with separators (e.g. CRI1:HTX:CN-SH:7K:Q3)."""
        parts = [PREFIX, self.authority, self.region, self.operator, self.site]
        if self.pool is not None and self.model is not None:
            parts += [self.pool, self.model]
        return SEPARATOR.join(parts)

    @property
    def check(self) -> str:
        """The ISO 7064 MOD 37-36 check character of the payload."""
        return check_character(self.payload)

    @property
    def site_cri(self) -> Cri:
        """The site this CRI belongs to (itself for a site)."""
        if self.pool is None:
            return self
        return Cri(self.authority, self.region, self.operator, self.site)

    def is_prefix_of(self, other: Cri) -> bool:
        """True when self is a site and `other` is one of its pools (the site -> pool relation)."""
        return self.kind == "site" and other.kind == "pool" and other.site_cri == self

    def __str__(self) -> str:
        """Canonical text form."""
        return f"{self.payload}{SEPARATOR}{self.check}"


def normalize_cri_text(text: str) -> str:
    """NFKC-normalize and strip input (full-width '：' and '－' become ':' and '-'); case is kept."""
    return unicodedata.normalize("NFKC", text).strip()


def parse_cri(text: str, *, catalogue: Container[str] | None = None) -> Cri:
    """Parse and validate a CRI; with a catalogue the model must be known. Raises CriError."""
    if not isinstance(text, str):
        raise CriError(f"a CRI must be text, not {type(text).__name__}", reason="bad_character")
    normalized = normalize_cri_text(text)
    for position, ch in enumerate(normalized):
        if ch not in _INPUT_CHARS:
            raise CriError(
                f"character {ch!r} (U+{ord(ch):04X}) at position {position} is not allowed in a CRI",
                reason="bad_character",
                position=position,
                character=ch,
            )
    upper = normalized.upper()
    parts = upper.split(SEPARATOR)
    if parts[0] != PREFIX:
        raise CriError(f"a CRI starts with {PREFIX}:, found {parts[0]!r}", reason="bad_prefix")
    if len(parts) not in (SITE_SEGMENTS, POOL_SEGMENTS):
        raise CriError(
            f"a CRI has {SITE_SEGMENTS} segments (site) or {POOL_SEGMENTS} (pool), found {len(parts)}",
            reason="bad_segment_count",
            segments=len(parts),
        )
    found_check = parts[-1]
    body = parts[1:-1]
    pool, model = (body[4], body[5]) if len(body) == 6 else (None, None)
    cri = Cri(body[0], body[1], body[2], body[3], pool, model)
    if model is not None and catalogue is not None and model not in catalogue:
        raise CriError(f"model {model!r} is not in the accelerator catalogue", reason="unknown_model")
    if len(found_check) != 1 or found_check not in CHECK_ALPHABET:
        raise CriError(
            f"check character must be one of 0-9 or A-Z; expected {cri.check!r}, found {found_check!r}",
            reason="bad_check_character",
            expected=cri.check,
            found=found_check,
        )
    if found_check != cri.check:
        raise CriError(
            f"wrong check character: expected {cri.check!r}, found {found_check!r}",
            reason="bad_check_character",
            expected=cri.check,
            found=found_check,
        )
    return cri


def format_cri(cri: Cri) -> str:
    """Canonical text form of a CRI (same as str(cri))."""
    return str(cri)


def mint_site_cri(
    authority: str,
    region: str,
    operator: str,
    site: str | None = None,
    rng: random.Random | None = None,
) -> Cri:
    """Mint a site CRI; a random site code is drawn when none is given."""
    code = site if site is not None else random_code(SITE_CODE_LENGTH, rng)
    return Cri(authority, region, operator, code)


def mint_pool_cri(
    site: Cri,
    model: str,
    pool: str | None = None,
    rng: random.Random | None = None,
) -> Cri:
    """Mint a pool CRI under `site`; pool codes are random so they do not reveal capacity."""
    if site.kind != "site":
        raise CriError("pools are minted under a site CRI, not under a pool", reason="bad_segment_count")
    code = pool if pool is not None else random_code(POOL_CODE_LENGTH, rng)
    return Cri(site.authority, site.region, site.operator, site.site, code, model)
