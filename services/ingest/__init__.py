"""Ingest service: MinIO bucket notifications in, image jobs (or rejections) out."""
