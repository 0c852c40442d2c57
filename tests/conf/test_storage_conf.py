"""What each region's bucket and its two keys must be (tikit/conf/storage.py), and that
docs/postgres.md says the same.  tests/integration/test_backups_restore.py gives the same
policy documents to a local S3 that enforces them."""

from __future__ import annotations

import re

import pytest

from tikit import settings
from tikit.conf import storage
from conftest import REPO

DOC = (REPO / "docs" / "postgres.md").read_text()


def actions(policy: dict) -> set[str]:
    (statement,) = policy["Statement"]
    assert statement["Effect"] == "Allow"
    return set(statement["Action"])


def test_read_only_key_reads_and_nothing_else():
    policy = storage.key_policy("tikit-backups-prod-lagos", read_only=True)
    assert actions(policy) == set(storage.READ_ACTIONS)
    assert not any(a.startswith(("s3:Put", "s3:Delete", "s3:Abort", "s3:Create")) for a in actions(policy))
    (statement,) = policy["Statement"]
    assert statement["Resource"] == ["arn:aws:s3:::tikit-backups-prod-lagos", "arn:aws:s3:::tikit-backups-prod-lagos/*"]


def test_read_write_key_cannot_destroy_history_or_change_the_bucket():
    rw = actions(storage.key_policy("b", read_only=False))
    assert rw == set(storage.READ_ACTIONS) | set(storage.WRITE_ACTIONS)
    for policy in (rw, actions(storage.key_policy("b", read_only=True))):
        assert not policy & set(storage.FORBIDDEN_ACTIONS)
        assert "s3:*" not in policy and not any("*" in a for a in policy)


@pytest.mark.parametrize("stack, days", [("dev", 3), ("staging", 7), ("prod", 14)])
def test_object_lock_covers_the_longest_retention(stack, days):
    s = settings.load({}, stack=stack)
    assert storage.lock_days(s.postgres.retention, s.redis.backup_retention_hours) == days
    assert storage.lock_days("2w", 24 * 20) == 20
    assert storage.lock_days("1m", 1) == 30


def test_docs_state_the_same_keys_and_lock():
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^ *\| (read-write|read-only) \| [^|]+ \| ([^|]+) \|$", DOC, re.M)}
    listed = {k: set(re.findall(r"`(s3:[A-Za-z]+)`", v)) for k, v in rows.items()}
    assert listed == {
        "read-write": actions(storage.key_policy("b", read_only=False)),
        "read-only": actions(storage.key_policy("b", read_only=True)),
    }
    for action in storage.FORBIDDEN_ACTIONS:
        if action.startswith("s3:PutBucket"):
            continue  # the docs name them together as s3:PutBucket*
        assert f"`{action}`" in DOC, action
    assert "`s3:PutBucket*`" in DOC
    assert storage.LOCK_MODES == {"prod": "COMPLIANCE", "staging": "GOVERNANCE", "dev": "GOVERNANCE"}
    assert "**COMPLIANCE in prod, GOVERNANCE in staging and dev**" in DOC
    assert "prod 14, staging 7, dev 3" in DOC
    assert f"`ABORT_INCOMPLETE_UPLOADS_DAYS`\n    ({storage.ABORT_INCOMPLETE_UPLOADS_DAYS})" in DOC
    assert f"`NONCURRENT_MARGIN_DAYS` ({storage.NONCURRENT_MARGIN_DAYS})" in DOC
