"""The job contract shared by adapters and workers: job and reply payloads, Redis key names,
admission (rate limits, queue position) and the client adapters submit through."""
