"""The preset table: every setting that differs between dev, staging and prod, in one place.

A stack file (``Pulumi.<stack>.yaml``) states only its deltas over its environment's
column.  docs/sizing.md shows this very table (``python -m preview.docs`` regenerates it and
a test keeps the two equal).  The sizes of dev, staging and prod follow the notes' "Right-
Sizing Instances": 1 x 512MB x 0.5 CPU, 2 x 1GB x 1 CPU, 2-10 x 2GB x 2 CPU.
"""

from __future__ import annotations

from typing import Any

ENVIRONMENTS = ("dev", "staging", "prod")

PRESETS: dict[str, tuple[Any, Any, Any]] = {
    #                                       dev        staging    prod
    "backend.minReplicas":                  (1,        2,         2),
    # Staging 3 and prod 12, not the notes' 2 and 10: the target users with 20 % headroom at
    # the assumed instance capacity (docs/sizing.md, "Requests").
    "backend.maxReplicas":                  (1,        3,         12),
    "backend.cpu":                          ("500m",   "1",       "2"),
    "backend.memory":                       ("512Mi",  "1Gi",     "2Gi"),
    "backend.peakMinReplicas":              (0,        0,         5),
    # 3,000 requests/minute (50 per second) per CPU of the request: an assumption until the
    # k6 test measures it (docs/sizing.md).
    "backend.sustainableRequestsPerMinute":  (1500,     3000,      6000),
    "workers.minReplicas":                  (0,        0,         1),
    "workers.maxReplicas":                  (2,        3,         10),
    "workers.cpu":                          ("250m",   "500m",    "1"),
    "workers.memory":                       ("256Mi",  "512Mi",   "1Gi"),
    "postgres.instances":                   (1,        2,         3),
    "postgres.cpu":                         ("500m",   "1",       "2"),
    "postgres.memory":                      ("1Gi",    "2Gi",     "8Gi"),
    "postgres.storageSize":                 ("5Gi",    "20Gi",    "100Gi"),
    "postgres.walStorageSize":              ("2Gi",    "5Gi",     "20Gi"),
    "postgres.retention":                   ("3d",     "7d",      "14d"),
    "pgbouncer.replicas":                   (1,        2,         2),
    "redis.replicas":                       (1,        2,         3),
    "redis.sentinels":                      (0,        0,         3),
    "redis.cpu":                            ("250m",   "500m",    "1"),
    "redis.memory":                         ("256Mi",  "512Mi",   "2Gi"),
    "redis.storageSize":                    ("1Gi",    "5Gi",     "20Gi"),
    "redis.backupRetentionHours":           (24,       72,        168),
    "gateway.hostname":                     ("api.dev.tikit.app", "api.staging.tikit.app", "api.tikit.app"),
    "gateway.envoyReplicas":                (1,        2,         3),
    "capacity.targetConcurrentUsers":       (100,      1000,      10000),
    # Operators (KEDA, cert-manager, CNPG, Envoy Gateway, ...) and Prometheus run two
    # replicas where the platform must survive a node loss.
    "addons.replicas":                      (1,        1,         2),
    # API-sized placeholder pods on warm nodes: the largest step the prod profile asks for
    # lands without waiting for a node (docs/nodes.md); none in dev.
    "nodes.bufferPods":                     (0,        1,         4),
    # Chaos experiments run where people rehearse failures, not in prod by default.
    "resilience.enabled":                   (False,    True,      False),
    # Weekly restore drills in the backup region (docs/runbooks/restore-drills.md).
    "restoreDrills.enabled":                (False,    True,      True),
}

# Each region's backups in (or near) that region: Lagos in af-south-1 (Cape Town, the AWS
# region of the Lagos Local Zone), London in eu-west-2.  dev and staging share
# objectStorage.endpointUrl; prod states every region's endpoint (settings refuse it without).
AF_SOUTH_1 = "https://s3.af-south-1.amazonaws.com"
EU_WEST_2 = "https://s3.eu-west-2.amazonaws.com"

REGION_PRESETS: dict[str, list[dict[str, Any]]] = {
    "dev": [{"name": "lagos", "role": "primary"}],
    "staging": [{"name": "lagos", "role": "primary"}, {"name": "london", "role": "backup"}],
    "prod": [
        {"name": "lagos", "role": "primary", "objectStorage": {"endpoint": AF_SOUTH_1}},
        {"name": "london", "role": "backup", "objectStorage": {"endpoint": EU_WEST_2}},
    ],
}


# Defaults of a region by its name, under whatever a stack file says about it (a stack that
# lists its regions keeps these).  Lagos is an AWS Local Zone of af-south-1 (Cape Town):
# one zone, few instance families, no promise of spot capacity, so workers may fall back to
# on-demand nodes there.  London is eu-west-2: three zones and a deep spot market, so its
# workers wait for spot rather than take on-demand capacity (docs/nodes.md).
REGION_DEFAULTS: dict[str, dict[str, Any]] = {
    "lagos": {"zones": ["af-south-1-los-1a"], "spotFallback": True},
    "london": {"zones": ["eu-west-2a", "eu-west-2b", "eu-west-2c"], "spotFallback": False},
}


def preset(environment: str) -> dict[str, dict[str, Any]]:
    """The environment's column as {section: {key: value}}."""
    index = ENVIRONMENTS.index(environment)
    out: dict[str, dict[str, Any]] = {}
    for dotted, row in PRESETS.items():
        section, key = dotted.split(".", 1)
        out.setdefault(section, {})[key] = row[index]
    return out
