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

# Not an annotation: how the names of read-only object-storage credentials Secrets end
# (tikit/settings.py READ_ONLY_SUFFIX; the backup-stores policy reads Secret names, since
# the keys themselves are created out of band).
READ_ONLY_SECRET_SUFFIX = "-readonly"

# Labels every object carries (tikit/kube.py labels()).
REGION_LABEL = "tikit.app/region"
ENVIRONMENT_LABEL = "tikit.app/environment"

ALL = {
    "REGION_ROLE": REGION_ROLE,
    "TARGET_CONCURRENT_USERS": TARGET_CONCURRENT_USERS,
    "REQUESTS_PER_USER_PER_MINUTE": REQUESTS_PER_USER_PER_MINUTE,
    "DB_CONNECTIONS_PER_REPLICA": DB_CONNECTIONS_PER_REPLICA,
}
