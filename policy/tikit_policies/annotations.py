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
# Namespace of an operator add-on: why it enforces a Pod Security level below
# "restricted" (its pods need the host, or its chart's pods do not meet the profile).
POD_SECURITY_EXCEPTION = "tikit.app/pod-security-exception"

# Workload: "true" = its pods may run on spot capacity (jobs safe to retry).
INTERRUPTIBLE = "tikit.app/interruptible"
# Namespace: the load the capacity model replays, k6 stages "<duration>:<users>" joined by commas.
LOAD_PROFILE = "tikit.app/load-profile"
# Namespace: requests per minute one user of the profile sends.
PROFILE_REQUESTS_PER_USER_PER_MINUTE = "tikit.app/profile-requests-per-user-per-minute"
# Deployment: requests per minute one instance serves (its capacity, not its scale-up threshold).
SUSTAINABLE_REQUESTS_PER_MINUTE = "tikit.app/sustainable-requests-per-minute"
# Deployment: seconds from container start to its health endpoint answering.
BOOT_SECONDS = "tikit.app/boot-seconds"
# NodePool: seconds from a pending pod to a new node Ready with the image.
PROVISIONING_SECONDS = "tikit.app/provisioning-seconds"
# NodePool: CPU per node outside the pods (DaemonSets and the kubelet's reservations).
NODE_OVERHEAD_CPU = "tikit.app/node-overhead-cpu"
# NodePool: memory per node outside the pods.
NODE_OVERHEAD_MEMORY = "tikit.app/node-overhead-memory"
# NodePool: share of an instance's memory the hypervisor keeps.
VM_MEMORY_OVERHEAD_PERCENT = "tikit.app/vm-memory-overhead-percent"

# Labels every object carries (tikit/kube.py labels()).
REGION_LABEL = "tikit.app/region"
ENVIRONMENT_LABEL = "tikit.app/environment"

ALL = {
    "REGION_ROLE": REGION_ROLE,
    "TARGET_CONCURRENT_USERS": TARGET_CONCURRENT_USERS,
    "REQUESTS_PER_USER_PER_MINUTE": REQUESTS_PER_USER_PER_MINUTE,
    "DB_CONNECTIONS_PER_REPLICA": DB_CONNECTIONS_PER_REPLICA,
    "POD_SECURITY_EXCEPTION": POD_SECURITY_EXCEPTION,
    "INTERRUPTIBLE": INTERRUPTIBLE,
    "LOAD_PROFILE": LOAD_PROFILE,
    "PROFILE_REQUESTS_PER_USER_PER_MINUTE": PROFILE_REQUESTS_PER_USER_PER_MINUTE,
    "SUSTAINABLE_REQUESTS_PER_MINUTE": SUSTAINABLE_REQUESTS_PER_MINUTE,
    "BOOT_SECONDS": BOOT_SECONDS,
    "PROVISIONING_SECONDS": PROVISIONING_SECONDS,
    "NODE_OVERHEAD_CPU": NODE_OVERHEAD_CPU,
    "NODE_OVERHEAD_MEMORY": NODE_OVERHEAD_MEMORY,
    "VM_MEMORY_OVERHEAD_PERCENT": VM_MEMORY_OVERHEAD_PERCENT,
}
