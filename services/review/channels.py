"""What each channel would make of a card, judged where the reviewer sees it.

The desk runs the export package's own rules (``services/export/channels``) on the card as it
stands, so the verdict on the card page is the one the export stage reaches: one set of rules
wherever a card is judged.  A row becomes a :class:`~services.export.listing.Listing` the way
the export stage's ``source.listing_from_row`` makes one, with the card the row holds now (the
person's edit where there is one) instead of the approved one: a pending card is judged before
it is approved, so a reviewer sees what a channel would refuse while it can still be fixed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from schemas.api import CardView
from schemas.taxonomy import Taxonomy
from services.export.channels import CHANNELS, entry_for
from services.export.listing import Listing
from services.export.shop import ShopSettings
from services.export.source import listing_from_row
from services.review import decisions


class ChannelProblem(BaseModel):
    field: str = Field(description="The channel's field (title, product_highlight, ...).")
    rule: str = Field(description="The rule it breaks, as the channel states it.")


class ChannelVerdict(BaseModel):
    """One channel's verdict on a card: ready, or the rules it breaks."""

    channel: str = Field(description="gmc, shopify or jsonld.")
    title: str = Field(description="The channel, for people: Google Merchant Center.")
    ready: bool = Field(description="The channel takes the card as it stands.")
    problems: list[ChannelProblem] = Field(default_factory=list)


class CardWithChannels(CardView):
    """``GET /v1/cards/{bucket}/{key}``: the card, and what each channel would make of it."""

    channels: list[ChannelVerdict] = Field(
        default_factory=list,
        description="Each channel's verdict on the card as it stands (the person's edit where "
        "there is one, the shop's facts); empty when there is no card. A pending card is "
        "judged too: what a channel would refuse once it is approved.",
    )


def listing_of(row: Mapping[str, Any], tree: Taxonomy) -> Listing | None:
    """The row's card as it stands, as a listing; None when it has no card, or one (or facts)
    that no longer holds under the contract (nothing a channel could be asked about)."""
    current = decisions.effective(row)
    if current is None:
        return None
    as_approved = {
        "bucket": row["bucket"],
        "object_key": row["object_key"],
        "card": current,
        "edited": row.get("edited_card") is not None,
        "facts": row.get("facts"),
        "photo_keys": row.get("photo_keys"),
        "main_photo": row.get("main_photo"),
        "reviewed_at": row.get("reviewed_at"),
    }
    try:
        return listing_from_row(as_approved, tree)
    except ValidationError:
        return None


def verdicts_of(listing: Listing, shop: ShopSettings) -> list[ChannelVerdict]:
    """Every channel's verdict on one listing, in the registry's order."""
    out = []
    for channel in CHANNELS.values():
        entry = entry_for(channel, listing, shop)
        out.append(
            ChannelVerdict(
                channel=channel.name,
                title=channel.title,
                ready=entry.ok,
                problems=[ChannelProblem(field=p.field, rule=p.rule) for p in entry.problems],
            )
        )
    return out


def card_verdicts(
    row: Mapping[str, Any] | None, tree: Taxonomy, shop: ShopSettings
) -> list[ChannelVerdict]:
    """The verdicts on a card row (empty: no row, or no card to judge)."""
    listing = listing_of(row, tree) if row is not None else None
    return verdicts_of(listing, shop) if listing is not None else []


def with_channels(view: CardView, verdicts: Sequence[ChannelVerdict]) -> CardWithChannels:
    return CardWithChannels(**dict(view), channels=list(verdicts))
