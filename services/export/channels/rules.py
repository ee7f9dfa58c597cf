"""What the channels' rules share: currencies, URLs, Google's apparel categories, cells.

Each channel module states its own rules; the checks several of them make are here once, each
returning the rule a value breaks in words (``None``: it keeps the rule), so a problem reads
the same on the desk, in ``vitrine export`` and in the exports bucket's ``problems.json``.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_CODES = """
    AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP
    BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB
    EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD
    JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP
    MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR
    RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND
    TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF XAG XAU XBA XBB
    XBC XBD XCD XCG XDR XOF XPD XPF XPT XSU XUA YER ZAR ZMW ZWG
"""
CURRENCIES = frozenset(_CODES.split())
"""ISO 4217 alphabetic codes in use (list one of the standard, with its fund and metal codes,
as amended to 2025: XCG for ANG, ZWG for ZWL, SLE for SLL, CUC withdrawn; XTS, a testing code,
and XXX, "no currency", left out): a feed price in any other is refused."""

_APPAREL = """
    166 167 168 169 170 171 173 175 176 177 178 179 180 181 182 184 187 188 189 190 191 192 193
    194 196 197 200 201 203 204 206 207 208 209 211 212 213 214 215 1483 1516 1578 1580 1581
    1594 1604 1662 1675 1772 1786 1807 1831 1856 1893 1922 1933 1948 2020 2160 2271 2292 2302
    2306 2331 2396 2427 2477 2562 2563 2580 2668 2745 2963 3032 3066 3128 3188 3191 3253 3379
    3414 3439 3455 3598 3683 3724 3729 3852 3888 3913 3951 3958 4003 4057 4179 5114 5122 5123
    5182 5183 5192 5193 5194 5207 5250 5322 5327 5329 5330 5343 5344 5378 5379 5385 5387 5388
    5390 5408 5409 5410 5411 5412 5422 5423 5424 5425 5426 5441 5443 5446 5460 5461 5462 5463
    5483 5484 5490 5506 5513 5514 5517 5549 5552 5555 5564 5567 5598 5621 5622 5623 5624 5625
    5626 5673 5674 5676 5677 5678 5679 5680 5681 5682 5683 5684 5685 5686 5687 5688 5697 5713
    5834 5841 5878 5907 5909 5914 5915 5939 5941 5942 5949 6006 6031 6087 6169 6170 6183 6227
    6228 6229 6238 6268 6277 6460 6463 6551 6552 6870 6984 6985 7003 7054 7078 7132 7133 7207
    7208 7209 7210 7211 7230 7235 7236 7237 7281 7304 7305 7306 7307 7313 7471 8017 8018 8149
    8200 8248 8451 499972 499979 500008 500118 502987 502988 543586 543587 543644 543645 543646
    543673 543674
"""
APPAREL_CATEGORIES = frozenset(_APPAREL.split())
"""Google's category ids under ``166 - Apparel & Accessories`` (166 and every descendant, from
Google's taxonomy-with-ids.en-US.txt, version 2021-09-21): Merchant Center requires ``color``
for these in every country, Brazil included."""

URL_MAX = 2000
PRICE = re.compile(r"^(\d{1,12}(?:\.\d{1,2})?) ([A-Z]{3})$")
DECIMAL = re.compile(r"^\d{1,12}(?:\.\d{1,2})?$")


def too_long(value: str, limit: int) -> str | None:
    """The rule a text longer than ``limit`` characters breaks."""
    return f"at most {limit} characters (has {len(value)})" if len(value) > limit else None


def url_problem(value: str) -> str | None:
    """Why ``value`` is not an address a channel fetches (http or https, a host, ≤ 2,000)."""
    if len(value) > URL_MAX:
        return f"a URL of at most {URL_MAX} characters (has {len(value)})"
    try:
        parts = urlsplit(value)
    except ValueError:
        return f"not a URL ({value[:60]!r})"
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"an http:// or https:// URL ({value[:60]!r})"
    if any(c.isspace() for c in value):
        return "a URL without spaces (encode them as %20)"
    return None


def cell(text: str) -> str:
    """``text`` fit for one TSV/CSV cell of a text feed: tabs and line breaks become spaces (a
    tab in a cell would shift every column after it)."""
    return " ".join(text.replace("\t", " ").split())
