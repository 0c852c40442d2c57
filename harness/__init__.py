"""Real daemons (PostgreSQL, PgBouncer, Redis, a local S3) on 127.0.0.1, shared by the integration tests and the benchmarks."""
