"""CRI codec: round trip, single-substitution detection, normalization, every error reason."""

from __future__ import annotations

import random
import string
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum.iso7064 import mod_37_36

from identifiers.catalogue import load_catalogue
from identifiers.cri import (
    Cri,
    check_character,
    format_cri,
    mint_pool_cri,
    mint_site_cri,
    parse_cri,
)
from identifiers.crockford import ALPHABET, is_code, random_code
from identifiers.errors import CriError, ValidationError
from identifiers.specs import specs_dir

CATALOGUE = load_catalogue()
REGIONS = ["CN-SH", "CN-GZ", "CN-NM", "CN-NX", "CN-GS", "CN-BJ", "CN-GD", "CN-SC", "CN-CQ", "CN-HE"]
EXAMPLES = [
    line.strip() for line in (specs_dir() / "cri-examples.txt").read_text(encoding="utf-8").splitlines() if line.strip()
]
# Characters a typo can produce: every upper-case letter, digit and separator.
TYPO_ALPHABET = string.ascii_uppercase + string.digits + ":-"

codes = st.text(alphabet=ALPHABET, min_size=2, max_size=8)
authorities = st.text(alphabet=string.ascii_uppercase + string.digits, min_size=1, max_size=8)
sites = st.builds(Cri, authorities, st.sampled_from(REGIONS), codes, codes)
pools = st.builds(
    lambda site, pool, model: mint_pool_cri(site, model, pool),
    sites,
    codes,
    st.sampled_from(CATALOGUE.codes),
)
any_cri = st.one_of(sites, pools)


def reason_of(text: str, **kwargs: object) -> str:
    with pytest.raises(CriError) as info:
        parse_cri(text, **kwargs)  # type: ignore[arg-type]
    return info.value.reason


def test_iso7064_vector() -> None:
    assert mod_37_36.calc_check_digit("A12425GABC1234002") == "M"
    assert mod_37_36.is_valid("A12425GABC1234002M")
    assert check_character("A12425GABC1234002") == "M"
    lines = (specs_dir() / "vectors" / "iso7064" / "mod_37_36.txt").read_text(encoding="utf-8").split("\n")
    vectors = [line.split() for line in lines if line.strip()]
    assert vectors
    for payload, expected in vectors:
        assert check_character(payload) == expected


def test_check_character_skips_separators() -> None:
    payload = "CRI1:HTX:CN-SH:QK:Q608"
    assert check_character(payload) == mod_37_36.calc_check_digit("CRI1HTXCNSHQKQ608")


@settings(max_examples=200)
@given(any_cri)
def test_round_trip(cri: Cri) -> None:
    text = str(cri)
    assert format_cri(cri) == text
    assert parse_cri(text) == cri
    assert parse_cri(text, catalogue=CATALOGUE) == cri
    assert text.endswith(":" + cri.check)
    assert mod_37_36.is_valid(text.replace(":", "").replace("-", ""))


@settings(max_examples=60, deadline=None)
@given(any_cri)
def test_every_single_substitution_is_detected(cri: Cri) -> None:
    text = str(cri)
    for position, original in enumerate(text):
        for replacement in TYPO_ALPHABET:
            if replacement == original:
                continue
            typo = text[:position] + replacement + text[position + 1 :]
            with pytest.raises(CriError):
                parse_cri(typo, catalogue=CATALOGUE)


@settings(max_examples=100, deadline=None)
@given(any_cri, st.data())
def test_substitution_among_letters_and_digits_is_detected_without_catalogue(cri: Cri, data) -> None:
    text = str(cri)
    positions = [i for i, ch in enumerate(text) if ch not in ":-"]
    position = data.draw(st.sampled_from(positions))
    replacement = data.draw(st.sampled_from(string.ascii_uppercase + string.digits))
    typo = text[:position] + replacement + text[position + 1 :]
    if typo != text:
        with pytest.raises(CriError):
            parse_cri(typo)


def to_fullwidth(text: str) -> str:
    return "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in text)


@settings(max_examples=150)
@given(any_cri, st.data())
def test_lower_case_and_fullwidth_input_normalize(cri: Cri, data) -> None:
    text = str(cri)
    assert parse_cri(text.lower()) == cri
    assert parse_cri(to_fullwidth(text)) == cri
    assert parse_cri(f"  {text.replace(':', '：').replace('-', '－')}\n") == cri
    # A random mix of full-width and lower-case characters normalizes to the same CRI.
    flips = data.draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    mixed = "".join(to_fullwidth(ch.lower()) if flip else ch for ch, flip in zip(text, flips, strict=True))
    assert parse_cri(mixed) == cri


def test_fullwidth_characters_are_nfkc_compatible() -> None:
    assert unicodedata.normalize("NFKC", "：－Ａｂ１") == ":-Ab1"


def test_examples_file_is_valid_and_typo_proof() -> None:
    assert len(EXAMPLES) >= 8
    kinds = set()
    for text in EXAMPLES:
        cri = parse_cri(text, catalogue=CATALOGUE)
        assert str(cri) == text
        kinds.add(cri.kind)
        for position, original in enumerate(text):
            for replacement in TYPO_ALPHABET:
                if replacement != original:
                    typo = text[:position] + replacement + text[position + 1 :]
                    with pytest.raises(CriError):
                        parse_cri(typo, catalogue=CATALOGUE)
    assert kinds == {"site", "pool"}


def test_kinds_and_prefix_relation() -> None:
    rng = random.Random(7)
    site = mint_site_cri("HTX", "CN-NX", "B4", rng=rng)
    pool = mint_pool_cri(site, "HW-910B3", rng=rng)
    other_site = mint_site_cri("HTX", "CN-NX", "B4", rng=rng)
    assert site.kind == "site" and pool.kind == "pool"
    assert pool.site_cri == site and site.site_cri == site
    assert site.is_prefix_of(pool)
    assert not pool.is_prefix_of(site)
    assert not site.is_prefix_of(site)
    assert not other_site.is_prefix_of(pool) or other_site == site
    assert pool.payload.startswith(site.payload + ":")


def test_pool_codes_are_random_not_sequential() -> None:
    site = mint_site_cri("HTX", "CN-SH", "QK", "Q608")
    pool_codes = [mint_pool_cri(site, "NV-H100-SXM").pool for _ in range(50)]
    assert len(set(pool_codes)) == 50
    assert all(code is not None and is_code(code, 6, 6) for code in pool_codes)
    assert pool_codes != sorted(pool_codes)


def test_random_code_is_reproducible_with_rng_and_uses_crockford() -> None:
    assert random_code(8, random.Random(3)) == random_code(8, random.Random(3))
    code = random_code(64)
    assert is_code(code) and not set(code) & set("ILOU")
    assert not is_code("AB1I") and not is_code("ab12") and not is_code("")
    with pytest.raises(ValueError):
        random_code(0)


GOOD_SITE = str(Cri("HTX", "CN-SH", "QK", "Q608"))
GOOD_POOL = str(Cri("HTX", "CN-SH", "QK", "Q608", "VC291X", "NV-H100-SXM"))


def with_check(payload: str) -> str:
    return f"{payload}:{check_character(payload)}"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("CRI1:HTX:CN-SH:QK:Q608:B#", "bad_character"),
        ("CRI1:HTX:CN SH:QK:Q608:B", "bad_character"),
        ("CRI1:HTX:CN‐SH:QK:Q608:B", "bad_character"),  # U+2010 HYPHEN is not NFKC-equal to '-'
        ("", "bad_prefix"),
        ("CRI2:HTX:CN-SH:QK:Q608:B", "bad_prefix"),
        ("URN:HTX:CN-SH:QK:Q608:B", "bad_prefix"),
        ("CRI1:HTX:CN-SH:QK:B", "bad_segment_count"),
        ("CRI1:HTX:CN-SH:QK:Q608:VC291X:B", "bad_segment_count"),
        ("CRI1:HTX:CN-SH:QK:Q608:VC291X:NV-H100-SXM:X:B", "bad_segment_count"),
        (with_check("CRI1:HTXEXCHANGE:CN-SH:QK:Q608"), "bad_authority"),
        (with_check("CRI1::CN-SH:QK:Q608"), "bad_authority"),
        (with_check("CRI1:HTX:CNSH:QK:Q608"), "bad_region"),
        (with_check("CRI1:HTX:CN-SHAN:QK:Q608"), "bad_region"),
        (with_check("CRI1:HTX:CN-QQ:QK:Q608"), "unknown_region"),
        (with_check("CRI1:HTX:XX-SH:QK:Q608"), "unknown_region"),
        (with_check("CRI1:HTX:CN-SH:QI:Q608"), "bad_operator"),
        (with_check("CRI1:HTX:CN-SH:Q:Q608"), "bad_operator"),
        (with_check("CRI1:HTX:CN-SH:QK:Q6O8"), "bad_site"),
        (with_check("CRI1:HTX:CN-SH:QK:Q608ABCDE"), "bad_site"),
        (with_check("CRI1:HTX:CN-SH:QK:Q608:VCU91X:NV-H100-SXM"), "bad_pool"),
        (with_check("CRI1:HTX:CN-SH:QK:Q608:VC291X:H100"), "bad_model"),
        (with_check("CRI1:HTX:CN-SH:QK:Q608:VC291X:NV--H100"), "bad_model"),
        ("CRI1:HTX:CN-SH:QK:Q608:Z", "bad_check_character"),
        ("CRI1:HTX:CN-SH:QK:Q608:BB", "bad_check_character"),
        ("CRI1:HTX:CN-SH:QK:Q608:", "bad_check_character"),
    ],
)
def test_each_error_reason(text: str, reason: str) -> None:
    assert reason_of(text) == reason


def test_unknown_model_only_with_catalogue() -> None:
    text = with_check("CRI1:HTX:CN-SH:QK:Q608:VC291X:NV-X999")
    assert parse_cri(text).model == "NV-X999"
    assert reason_of(text, catalogue=CATALOGUE) == "unknown_model"


def test_wrong_check_message_names_expected_and_found() -> None:
    good = parse_cri(GOOD_SITE)
    wrong = "Z" if good.check != "Z" else "Y"
    with pytest.raises(CriError) as info:
        parse_cri(GOOD_SITE[:-1] + wrong)
    err = info.value
    assert err.reason == "bad_check_character"
    assert good.check in err.message and wrong in err.message
    assert err.details == {"reason": "bad_check_character", "expected": good.check, "found": wrong}
    assert err.code == "invalid_cri" and isinstance(err, ValidationError)
    assert err.to_dict()["reason"] == "bad_check_character"


def test_never_auto_corrects_crockford_lookalikes() -> None:
    # Crockford decoders map O->0 and I/L->1; a CRI parser must refuse instead.
    typo = GOOD_SITE.replace("Q608", "Q6O8")
    assert reason_of(typo) == "bad_site"


def test_constructor_validates_and_mint_rejects_pool_under_pool() -> None:
    with pytest.raises(CriError):
        Cri("htx", "CN-SH", "QK", "Q608")
    with pytest.raises(CriError):
        Cri("HTX", "CN-SH", "QK", "Q608", "VC291X", None)
    pool = parse_cri(GOOD_POOL)
    with pytest.raises(CriError):
        mint_pool_cri(pool, "NV-H100-SXM")


def test_non_text_input_is_rejected() -> None:
    with pytest.raises(CriError):
        parse_cri(12345)  # type: ignore[arg-type]
