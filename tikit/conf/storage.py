"""What the backups expect of each region's bucket and of the two keys that open it.

The buckets and the keys are created out of band (docs/postgres.md, "Object storage per
region"), never by Pulumi, so nothing here is rendered into the cluster.  These pure
functions are the one statement of what the keys may do: the docs show them, and the
integration tests (tests/integration/test_backups_restore.py) give the very same policy
documents to a local S3 with IAM enforcement and prove that the read-only key can restore
but cannot write or delete.

Two keys per region's bucket:

* read-write, in the owning region only (Secret ``regions[].objectStorage.credentialsSecret``):
  the WAL archive, base backups and retention of PostgreSQL, the Redis snapshots and
  their pruning;
* read-only, in every other region (``readOnlyCredentialsSecret``): bootstrap and WAL
  replay of the replica cluster, restores and restore drills.

Neither key may delete object *versions*, change the bucket (versioning, Object Lock,
lifecycle, policy) or bypass a retention: with versioning and Object Lock on, even the
read-write key can only add delete markers, so a stolen key cannot destroy history.
"""

from __future__ import annotations

from typing import Any

# Listing and reading: what restoring needs (barman-cloud-backup-list / -restore /
# -wal-restore, rclone lsf / copyto from the bucket).
READ_ACTIONS = ("s3:GetBucketLocation", "s3:ListBucket", "s3:GetObject")
# Writing: WAL segments, base backups, Redis snapshots; DeleteObject for the retention
# (Barman's retentionPolicy, backup.sh's pruning), which on a versioned bucket only adds a
# delete marker; AbortMultipartUpload for interrupted large uploads.
WRITE_ACTIONS = ("s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload")
# Never granted to either key (the docs list them; a test keeps them out of both policies).
FORBIDDEN_ACTIONS = (
    "s3:CreateBucket",            # barman would create a mistyped bucket by itself
    "s3:DeleteBucket",
    "s3:DeleteObjectVersion",     # permanent deletion of history
    "s3:PutBucketVersioning",
    "s3:PutBucketObjectLockConfiguration",
    "s3:PutObjectRetention",
    "s3:BypassGovernanceRetention",
    "s3:PutLifecycleConfiguration",
    "s3:PutBucketPolicy",
)

# Object Lock default retention, in days, at least the longest backup retention of the
# stack (postgres.retention, redis.backupRetentionHours): see lock_days().
LOCK_MODES = {"prod": "COMPLIANCE", "staging": "GOVERNANCE", "dev": "GOVERNANCE"}
# Incomplete multipart uploads (an interrupted base backup) are removed after this many days.
ABORT_INCOMPLETE_UPLOADS_DAYS = 2
# Non-current versions (what retention and pruning replaced) stay this long past the lock.
NONCURRENT_MARGIN_DAYS = 7


def bucket_arns(bucket: str) -> list[str]:
    return [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]


def key_policy(bucket: str, *, read_only: bool) -> dict[str, Any]:
    """The IAM identity policy of one key to ``bucket``: read-only for the peers, read-write
    (still without version deletion or bucket changes) for the owning region."""
    actions = READ_ACTIONS if read_only else READ_ACTIONS + WRITE_ACTIONS
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "TikitBackupsReadOnly" if read_only else "TikitBackupsReadWrite",
                "Effect": "Allow",
                "Action": list(actions),
                "Resource": bucket_arns(bucket),
            }
        ],
    }


def lock_days(postgres_retention: str, redis_retention_hours: int) -> int:
    """Object Lock default retention: the longest backup retention, in whole days, so no
    backup inside its window can be removed before the window has passed."""
    n, unit = int(postgres_retention[:-1]), postgres_retention[-1]
    pg_days = n * {"d": 1, "w": 7, "m": 30}[unit]
    return max(pg_days, -(-redis_retention_hours // 24))
