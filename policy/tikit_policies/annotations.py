"""Annotation keys the policies read: capacity facts that no Kubernetes field carries.

The program sets them (tikit/names.py holds the same keys; a test keeps the two equal).
The pack keeps its own copy because it runs apart from the program: under
``pulumi preview --policy-pack policy`` it is a separate process, and a published pack
carries only this directory.
"""

# Namespace: "primary" or "backup" - which region serves traffic and holds the writable database.
REGION_ROLE = "tikit.app/region-role"
# Namespace: what the stack must carry (settings.capacity).
TARGET_CONCURRENT_USERS = "tikit.app/target-concurrent-users"
REQUESTS_PER_USER_PER_MINUTE = "tikit.app/requests-per-user-per-minute"
# Deployment of a database client: connections each replica may open to each PgBouncer pool.
DB_CONNECTIONS_PER_REPLICA = "tikit.app/db-connections-per-replica"
# ObjectStore: the region its bucket lives in (the program sets it on every ObjectStore).
STORAGE_REGION = "tikit.app/storage-region"
# Namespace of an operator add-on: why it enforces a Pod Security level below
# "restricted" (its pods need the host, or its chart's pods do not meet the profile).
POD_SECURITY_EXCEPTION = "tikit.app/pod-security-exception"

# Labels every object carries (tikit/kube.py labels()).
REGION_LABEL = "tikit.app/region"
ENVIRONMENT_LABEL = "tikit.app/environment"

ALL = {
    "REGION_ROLE": REGION_ROLE,
    "TARGET_CONCURRENT_USERS": TARGET_CONCURRENT_USERS,
    "REQUESTS_PER_USER_PER_MINUTE": REQUESTS_PER_USER_PER_MINUTE,
    "DB_CONNECTIONS_PER_REPLICA": DB_CONNECTIONS_PER_REPLICA,
    "STORAGE_REGION": STORAGE_REGION,
    "POD_SECURITY_EXCEPTION": POD_SECURITY_EXCEPTION,
}
