"""The channels a card is exported to, each one module: its rules, its format.

:data:`CHANNELS` maps a channel's name (``gmc``, ``shopify``, ``jsonld``) to its
:class:`~services.export.channels.base.Channel`.
"""

from __future__ import annotations

from services.export.channels.base import Channel, Entry, Feed, Problem, build_feed, entry_for
from services.export.channels.gmc import GMC
from services.export.channels.jsonld import JSONLD
from services.export.channels.shopify import SHOPIFY

CHANNELS: dict[str, Channel] = {c.name: c for c in (GMC, SHOPIFY, JSONLD)}

__all__ = ["CHANNELS", "Channel", "Entry", "Feed", "Problem", "build_feed", "entry_for"]
