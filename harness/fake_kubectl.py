"""A stand-in for kubectl, for running the PostgreSQL restore drill script without a cluster:
it keeps the drill Cluster's life cycle in a state directory and can hand ``kubectl exec
... psql`` to a real PostgreSQL (the restored server of the backup test).

``install(bin_dir, state_dir)`` writes an executable ``kubectl`` into ``bin_dir``; put that
first on the script's PATH.  Environment it reads (all optional):

* FAKE_READY_AFTER: how many phase polls until the Cluster is healthy (default 1; "never");
* FAKE_GONE_AFTER: how many reads a deleted Cluster still shows (default 0);
* FAKE_PSQL: a psql binary; with FAKE_PGHOST, FAKE_PGPORT, FAKE_PGUSER, FAKE_PGPASSWORD,
  ``exec ... -- psql ARGS`` runs it against that server with ARGS and this stdin;
* FAKE_EXEC_OUTPUT / FAKE_EXEC_STATUS: otherwise what ``exec`` prints and exits with.

Every call is appended to ``<state>/calls.jsonl``; ``calls(state)`` reads them back and
``requests(state)`` turns them into the (verb, resource, name) the API server would
authorise, for comparing with the drill's Role.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

SCRIPT = r'''#!@PYTHON@
import json, os, subprocess, sys
from pathlib import Path

state = Path(os.environ["FAKE_KUBECTL_STATE"])
args = sys.argv[1:]
with open(state / "calls.jsonl", "a") as f:
    f.write(json.dumps(args) + "\n")
if args[:1] == ["--namespace"]:
    args = args[2:]
cluster = state / "cluster.json"
counter = state / "counter.json"


def bump(key):
    data = json.loads(counter.read_text()) if counter.exists() else {}
    data[key] = data.get(key, 0) + 1
    counter.write_text(json.dumps(data))
    return data[key]


def exists():
    if cluster.exists():
        return True
    ghost = state / "deleted"
    if ghost.exists():
        left = int(ghost.read_text())
        if left > 0:
            ghost.write_text(str(left - 1))
            return True
    return False


def not_found(name):
    sys.stderr.write(f'Error from server (NotFound): clusters.postgresql.cnpg.io "{name}" not found\n')
    sys.exit(1)


verb = args[0]
if verb == "get" and args[1] == "cluster":
    name = args[2]
    if not exists():
        not_found(name)
    out = args[args.index("-o") + 1]
    if out == "name":
        print(f"cluster.postgresql.cnpg.io/{name}")
    elif out == "jsonpath={.status.phase}":
        after = os.environ.get("FAKE_READY_AFTER", "1")
        polls = bump("phase")
        healthy = after != "never" and polls > int(after)
        sys.stdout.write("Cluster in healthy state" if healthy else "Setting up primary")
    elif out == "jsonpath={.status.readyInstances}":
        data = json.loads(counter.read_text()) if counter.exists() else {}
        after = os.environ.get("FAKE_READY_AFTER", "1")
        sys.stdout.write("1" if after != "never" and data.get("phase", 0) > int(after) else "")
    sys.exit(0)
if verb == "create":
    manifest = sys.stdin.read()
    json.loads(manifest)  # the API server would refuse anything else
    cluster.write_text(manifest)
    (state / "created.json").write_text(manifest)
    print("cluster.postgresql.cnpg.io/created")
    sys.exit(0)
if verb == "delete":
    if cluster.exists():
        cluster.unlink()
        (state / "deleted").write_text(os.environ.get("FAKE_GONE_AFTER", "0"))
    print("deleted")
    sys.exit(0)
if verb == "exec":
    command = args[args.index("--") + 1:]
    if os.environ.get("FAKE_PSQL") and command[:1] == ["psql"]:
        env = dict(os.environ, PGHOST=os.environ["FAKE_PGHOST"], PGPORT=os.environ["FAKE_PGPORT"],
                   PGUSER=os.environ["FAKE_PGUSER"], PGPASSWORD=os.environ["FAKE_PGPASSWORD"])
        sys.exit(subprocess.run([os.environ["FAKE_PSQL"], *command[1:]], env=env).returncode)
    sys.stdout.write(os.environ.get("FAKE_EXEC_OUTPUT", ""))
    sys.exit(int(os.environ.get("FAKE_EXEC_STATUS", "0")))
sys.stderr.write(f"fake kubectl: unexpected call {args}\n")
sys.exit(2)
'''


def install(bin_dir: Path, state_dir: Path) -> dict[str, str]:
    """Write the fake into ``bin_dir``; returns the environment entries that select it."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / "kubectl"
    path.write_text(SCRIPT.replace("@PYTHON@", sys.executable))
    path.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}", "FAKE_KUBECTL_STATE": str(state_dir)}


def calls(state_dir: Path) -> list[list[str]]:
    path = state_dir / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def requests(state_dir: Path) -> list[tuple[str, str, str | None]]:
    """(verb, resource, name) of every API request the calls amount to."""
    out: list[tuple[str, str, str | None]] = []
    for args in calls(state_dir):
        if args[:1] == ["--namespace"]:
            args = args[2:]
        verb = args[0]
        if verb in ("get", "delete"):
            out.append((verb, {"cluster": "clusters"}[args[1]], args[2]))
        elif verb == "create":
            out.append(("create", "clusters", None))
        elif verb == "exec":
            pod = next(a for a in args[1:] if not a.startswith("-"))
            out += [("get", "pods", pod), ("create", "pods/exec", pod)]
    return out


def allowed(rules: list[dict], verb: str, resource: str, name: str | None) -> bool:
    """Whether a Role's rules allow one request (create carries no name)."""
    return any(
        resource in r["resources"] and verb in r["verbs"] and ("resourceNames" not in r or name in r["resourceNames"])
        for r in rules
    )
