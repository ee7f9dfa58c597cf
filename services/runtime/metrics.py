"""Prometheus exposition and the consumer-lag gauge every consuming service reports."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer
from prometheus_client import Counter, Gauge, start_http_server

KAFKA_RETRIES = Counter(
    "vitrine_kafka_retries_total",
    "Kafka operations retried after a transient fault (broker restarting, timeouts).",
    ["what"],
)
CONSUMER_LAG = Gauge(
    "vitrine_consumer_lag",
    "Messages between the committed position and the end of the partition.",
    ["group", "topic", "partition"],
)


def serve_metrics(port: int | None, host: str = "127.0.0.1") -> None:
    """Start /metrics on ``host``:``port`` (0 picks a free port; None disables)."""
    if port is not None:
        start_http_server(port, addr=host)


async def record_lag(consumer: AIOKafkaConsumer, group: str) -> None:
    """Update lag gauges from the consumer's cached high-water marks and local positions."""
    for tp in consumer.assignment():
        highwater = consumer.highwater(tp)
        if highwater is None:
            continue
        position = await consumer.position(tp)
        CONSUMER_LAG.labels(group, tp.topic, str(tp.partition)).set(max(highwater - position, 0))
