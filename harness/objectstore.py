"""A local S3 (moto's server mode) on 127.0.0.1 for the backup and restore tests and the
benchmark (bench/pitr_bench.py), with IAM enforcement, so a read-only key really is refused
when it writes.

moto comes from PyPI (``moto[server]`` in requirements-dev.txt, 5.2.5 or newer: 5.2.1 fails
the SigV4 check of listings whose query holds ``%2F`` once IAM is enforced, and every
barman-cloud listing does).  It is started by its explicit path in this interpreter's
virtualenv, never as whatever ``moto_server`` comes first on PATH.

How a test uses it::

    with MotoServer() as s3:
        s3.create_bucket("tikit-backups-prod-lagos")
        rw = s3.create_key("lagos", storage.key_policy("tikit-backups-prod-lagos", read_only=False))
        s3.enforce_iam()          # from here on only the keys made above are accepted
        env = tool_env(home, rw)  # for barman-cloud-* and rclone

Limits of the simulation (moto's own): only identity policies are evaluated (no bucket
policies, few conditions), and moto authorises HeadBucket as the made-up action
``s3:HeadBucket`` where AWS uses ``s3:ListBucket``; ``for_moto()`` adds it to a policy,
so the documents under test stay exactly the real ones otherwise.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

HOST = "127.0.0.1"
# Any region works against moto; us-east-1 creates buckets without a LocationConstraint.
REGION = "us-east-1"
START_TIMEOUT = 30.0
# Before enforcement any key is accepted; these sign the set-up calls.
ADMIN_KEYS = ("testing", "testing")
TOOL_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# The oldest moto whose server mode verifies barman-cloud's signed listings under IAM.
MIN_MOTO = (5, 2, 5)


def moto_server_path() -> Optional[Path]:
    """moto_server next to this interpreter (the project's virtualenv), if installed."""
    path = Path(sys.executable).parent / "moto_server"
    return path if path.exists() else None


def moto_version() -> tuple[int, ...]:
    from importlib.metadata import version

    return tuple(int(x) for x in re.findall(r"\d+", version("moto"))[:3])


@dataclass(frozen=True)
class Keys:
    access_key_id: str
    secret_access_key: str


def for_moto(policy: Mapping[str, Any]) -> dict[str, Any]:
    """``policy`` plus ``s3:HeadBucket`` wherever it grants ``s3:ListBucket``: moto checks
    that made-up action for HeadBucket (every barman tool starts with one), AWS checks
    ListBucket.  Nothing else changes."""
    doc = json.loads(json.dumps(policy))
    for statement in doc["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if "s3:ListBucket" in actions:
            statement["Action"] = [*actions, "s3:HeadBucket"]
    return doc


class MotoServer:
    """moto_server on a port the kernel picks, killed on exit."""

    def __init__(self, workdir: Optional[Path] = None) -> None:
        binary = moto_server_path()
        if binary is None:
            raise RuntimeError(f"moto_server is not installed next to {sys.executable} (pip install 'moto[server]>=5.2.5')")
        if moto_version() < MIN_MOTO:
            raise RuntimeError(f"moto {moto_version()} is too old: IAM-enforced listings need {MIN_MOTO} or newer")
        self.binary = binary
        self.root = Path(workdir or tempfile.mkdtemp(prefix="tikit-moto-"))
        self.log = self.root / "moto.log"
        self.proc: Optional[subprocess.Popen] = None
        self.endpoint = ""

    def __enter__(self) -> "MotoServer":
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)  # enforcement is switched on at run time
        with open(self.log, "wb") as out:
            # -p 0: the kernel picks the port and werkzeug prints it.
            self.proc = subprocess.Popen(
                [str(self.binary), "-H", HOST, "-p", "0"], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=env, start_new_session=True,
            )
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                m = re.search(r"Running on http://127\.0\.0\.1:(\d+)", self.log.read_text(errors="replace"))
                if m:
                    self.endpoint = f"http://{HOST}:{m.group(1)}"
                    try:
                        with urllib.request.urlopen(f"{self.endpoint}/moto-api/data.json", timeout=2) as r:
                            if r.status == 200:
                                break
                    except OSError:
                        pass
                if self.proc.poll() is not None:
                    raise RuntimeError(f"moto_server exited {self.proc.returncode}:\n{self.tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server not up within {START_TIMEOUT:.0f}s:\n{self.tail()}")
                time.sleep(0.05)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    # ---- clients -------------------------------------------------------------------------

    def client(self, service: str, keys: Keys | tuple[str, str] = ADMIN_KEYS):
        import boto3
        from botocore.config import Config

        key_id, secret = (keys.access_key_id, keys.secret_access_key) if isinstance(keys, Keys) else keys
        return boto3.client(
            service, endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}),
        )

    def create_bucket(self, bucket: str) -> None:
        self.client("s3").create_bucket(Bucket=bucket)

    def create_key(self, user: str, policy: Mapping[str, Any]) -> Keys:
        """An IAM user with ``policy`` (made moto-compatible by for_moto) and an access key."""
        iam = self.client("iam")
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName=f"{user}-s3", PolicyDocument=json.dumps(for_moto(policy)))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        return Keys(key["AccessKeyId"], key["SecretAccessKey"])

    def enforce_iam(self) -> None:
        """From now on only IAM users' keys are accepted and their policies apply.  The body
        is the new count of unchecked actions; sent as text/plain, or Flask eats it."""
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset-auth", data=b"0", method="POST",
                                     headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            json.loads(resp.read())


def tool_env(home: Path, keys: Keys, extra: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """A minimal environment for barman-cloud-* (Debian's /usr/bin/python3 scripts: no venv
    PYTHON* may leak into them) and rclone: the keys, the region, no host AWS or rclone
    config, and no instance-metadata lookups when a key is missing."""
    env = {
        # The Debian tools only: no virtualenv, pyenv or /usr/local shims in front of them.
        "PATH": TOOL_PATH,
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TZ": "UTC",
        "AWS_ACCESS_KEY_ID": keys.access_key_id,
        "AWS_SECRET_ACCESS_KEY": keys.secret_access_key,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(home / "aws-config-none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials-none"),
        "RCLONE_CONFIG": str(home / "rclone.conf"),
    }
    env.update(extra or {})
    return env
