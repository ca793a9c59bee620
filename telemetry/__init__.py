"""What a running Phobos process tells its operator: Prometheus metrics, health probes, structured logs."""
