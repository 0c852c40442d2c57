"""Throwaway certificate authorities and certificates for the TLS tests, made with the openssl
command line (no Python dependency): a CA, and leaf certificates it signs for DNS names and
IP addresses, ECDSA P-256 like the cluster's (CNPG's and cert-manager's).

The cluster has two CAs, and so do the tests: CNPG's per-cluster CA, which signs
PostgreSQL's server certificate (PgBouncer verifies it), and the namespace's internal CA,
which signs the PgBouncer pools' certificates (the apps verify them).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

DAYS = 2


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed:\n{done.stderr[-2000:]}")


def _ec_key(path: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path))
    path.chmod(0o600)


def ca(root: Path, name: str, common_name: str) -> Pair:
    """A self-signed CA certificate and its key under ``root``."""
    pair = Pair(root / f"{name}.crt", root / f"{name}.key")
    _ec_key(pair.key)
    _openssl("req", "-x509", "-new", "-key", str(pair.key), "-out", str(pair.cert), "-days", str(DAYS),
             "-subj", f"/CN={common_name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return pair


def issue(root: Path, issuer: Pair, name: str, *, dns: Sequence[str] = (), ips: Sequence[str] = ()) -> Pair:
    """A server certificate signed by ``issuer`` for ``dns`` names and ``ips``."""
    pair = Pair(root / f"{name}.crt", root / f"{name}.key")
    _ec_key(pair.key)
    csr = root / f"{name}.csr"
    _openssl("req", "-new", "-key", str(pair.key), "-out", str(csr), "-subj", f"/CN={(list(dns) or list(ips))[0]}")
    ext = root / f"{name}.ext"
    alt = ",".join([*(f"DNS:{d}" for d in dns), *(f"IP:{i}" for i in ips)])
    ext.write_text(f"basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                   f"extendedKeyUsage=serverAuth\nsubjectAltName={alt}\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(issuer.cert), "-CAkey", str(issuer.key), "-CAcreateserial",
             "-out", str(pair.cert), "-days", str(DAYS), "-extfile", str(ext))
    return pair
