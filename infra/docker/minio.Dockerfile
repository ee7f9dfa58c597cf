# syntax=docker/dockerfile:1
# MinIO for docker-compose.yml, built from source at the same module version as the native stack
# (VITRINE_MINIO_VERSION in infra/dev.env; tests/stack/test_compose.py checks that they agree).
#
# Why not an upstream image: MinIO stopped publishing community images in October 2025, and the
# last one predates the security fixes of the final source release; the module proxy still serves
# that source. `go install` as infra/stack does, then a slim runtime with curl for the healthcheck.

ARG GO_IMAGE=golang:1.26-trixie
ARG BASE_IMAGE=debian:trixie-slim

FROM ${GO_IMAGE} AS build
ARG MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
RUN CGO_ENABLED=0 GOBIN=/out go install -trimpath -ldflags "-s -w" \
        "github.com/minio/minio@${MINIO_VERSION}"

FROM ${BASE_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/minio /usr/local/bin/minio
# Data and the notification queue belong to an unprivileged user; named volumes mounted on these
# directories take their ownership when first created. Its home is not /data: MinIO keeps
# ~/.minio (certs) there, which must not land among the buckets.
RUN useradd --system --uid 10002 --user-group --create-home --home-dir /home/minio \
        --shell /usr/sbin/nologin minio \
    && mkdir -p /data /queue \
    && chown minio:minio /data /queue
USER minio
EXPOSE 9000 9001
ENTRYPOINT ["minio"]
CMD ["server", "/data", "--address", ":9000", "--console-address", ":9001"]
