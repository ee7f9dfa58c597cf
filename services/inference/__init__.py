"""Inference service: the card engine and, around it, the Kafka worker."""
