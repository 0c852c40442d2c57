"""Requests of the containers the program runs beside each tier's main container: exporters,
sidecars, Sentinels, the Redis backup job and the k6 starter.

Fixed facts, not settings.  They live here, below the components, because two layers need
them: the components that declare the containers and tikit/derived.py, which sizes the
node pools for every pod that can land there (docs/nodes.md).
"""

from __future__ import annotations

# (cpu, memory) per container; requests == the memory limit (kube.resources).
PGBOUNCER_EXPORTER = ("50m", "64Mi")
REDIS_EXPORTER = ("50m", "64Mi")
REDIS_SENTINEL = ("100m", "64Mi")
# The hourly backup job: one init container copies the tools, then the backup runs (the
# pod requests the larger of the two, and they are the same size).
REDIS_BACKUP = ("250m", "256Mi")
# The Barman Cloud plugin's sidecar in every PostgreSQL instance pod; requests == limits,
# so the pod stays in the Guaranteed QoS class.
BARMAN_SIDECAR = ("250m", "256Mi")
# The k6 starter pod: it only curls the runners' REST API.
K6_STARTER = ("50m", "64Mi")
