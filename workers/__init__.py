"""The worker side: the queue protocol on Redis Streams, the job loop, the Redis-backed document store."""
