"""What every vitrine service shares: settings, JSON logs, metrics, Kafka and S3 clients."""
