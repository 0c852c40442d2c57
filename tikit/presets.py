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
    "backend.maxReplicas":                  (1,        2,         10),
    "backend.cpu":                          ("500m",   "1",       "2"),
    "backend.memory":                       ("512Mi",  "1Gi",     "2Gi"),
    "backend.peakMinReplicas":              (0,        0,         5),
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


def preset(environment: str) -> dict[str, dict[str, Any]]:
    """The environment's column as {section: {key: value}}."""
    index = ENVIRONMENTS.index(environment)
    out: dict[str, dict[str, Any]] = {}
    for dotted, row in PRESETS.items():
        section, key = dotted.split(".", 1)
        out.setdefault(section, {})[key] = row[index]
    return out
