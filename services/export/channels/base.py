"""What every channel is: records in its own representation, its rules over them, a feed.

A channel turns a :class:`~services.export.listing.Listing` into *records*, the channel's own
representation (a GMC TSV row as a dict of column → text, Shopify CSV rows, a schema.org
``Product`` object), checks those records against its rules (:meth:`Channel.problems`), and
renders the records of many listings into one feed file.  The rules read the records, not the
card, so the same check runs on a feed parsed back from the bucket (the tests do) as on one
being written: what the validator passes is what the file holds.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from services.export.listing import Listing
from services.export.shop import ShopSettings

Record = dict[str, Any]


@dataclass(frozen=True)
class Problem:
    """One thing a channel would refuse: which field, and the rule it breaks."""

    channel: str
    field: str
    rule: str

    def __str__(self) -> str:
        return f"{self.field}: {self.rule}"

    def as_json(self) -> dict[str, str]:
        return {"channel": self.channel, "field": self.field, "rule": self.rule}


class Channel(Protocol):
    name: ClassVar[str]
    """Short name: ``gmc``, ``shopify``, ``jsonld`` (the CLI's --channel, the bucket's folder)."""
    title: ClassVar[str]
    """For people: ``Google Merchant Center``."""
    suffix: ClassVar[str]
    """The feed file's extension, without the dot."""
    content_type: ClassVar[str]

    def records(self, listing: Listing, shop: ShopSettings) -> list[Record]:
        """The listing in the channel's representation (one or more records)."""
        ...

    def problems(self, records: Sequence[Mapping[str, Any]]) -> list[Problem]:
        """Every rule of the channel the records break (empty: the channel takes them)."""
        ...

    def render(self, records: Sequence[Record]) -> bytes:
        """A whole feed of these records (those of every listing that passed)."""
        ...

    def extra_files(self, records: Sequence[Record], shop: ShopSettings) -> dict[str, bytes]:
        """Further files the channel offers beside its feed, by name (GMC: the Merchant API's
        products as JSON); empty for most."""
        ...


@dataclass(frozen=True)
class Entry:
    """One listing judged by one channel."""

    listing: Listing
    records: list[Record]
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Feed:
    """A channel's feed over many listings: the file, and who is in or out of it."""

    channel: Channel
    body: bytes
    listed: list[Entry] = field(default_factory=list)
    left_out: list[Entry] = field(default_factory=list)
    extra: dict[str, bytes] = field(default_factory=dict)

    def only(self, keys: Collection[str]) -> Feed:
        """The part of this feed whose cards' object keys are in ``keys`` (a batch's delta):
        the same records the full feed holds, judged once."""
        listed = [e for e in self.listed if e.listing.key in keys]
        body = self.channel.render([r for e in listed for r in e.records])
        return Feed(self.channel, body, listed)


def entry_for(channel: Channel, listing: Listing, shop: ShopSettings) -> Entry:
    records = channel.records(listing, shop)
    return Entry(listing, records, channel.problems(records))


def build_feed(channel: Channel, listings: Sequence[Listing], shop: ShopSettings) -> Feed:
    """The feed of every listing the channel takes; the others are left out with their
    problems (never written into a file the channel would reject)."""
    entries = [entry_for(channel, listing, shop) for listing in listings]
    listed = [e for e in entries if e.ok]
    records = [r for e in listed for r in e.records]
    return Feed(
        channel,
        channel.render(records),
        listed,
        [e for e in entries if not e.ok],
        channel.extra_files(records, shop),
    )
