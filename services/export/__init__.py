"""From approved card to shop: channel feeds (Google Merchant Center, Shopify, schema.org).

``channels/`` holds each channel's rules and format, pure functions of a :class:`Listing`
(the approved card, the shop's facts, its photos) and the shop's settings; ``service.py`` is the
stage that keeps the feeds in the exports bucket; ``vitrine export`` and the review desk use the
same channel modules, so a card is judged by one set of rules wherever it is shown.
"""
