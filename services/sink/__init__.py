"""Sink service: card results in, rows of ``product_cards`` out."""
