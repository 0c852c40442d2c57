"""Real daemons (PostgreSQL, PgBouncer, Redis) on 127.0.0.1, shared by the integration tests and the benchmarks."""
