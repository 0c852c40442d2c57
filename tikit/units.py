"""Kubernetes quantities as numbers: CPU in millicores, memory and storage in bytes."""

from __future__ import annotations

import re

CPU_RE = re.compile(r"^([0-9]+)(m?)$|^([0-9]+\.[0-9]+)$")
MEMORY_RE = re.compile(r"^([0-9]+)(Ki|Mi|Gi|Ti)$")
MEMORY_UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4}
MIB = MEMORY_UNITS["Mi"]
GIB = MEMORY_UNITS["Gi"]
TIB = MEMORY_UNITS["Ti"]


def cpu_millis(quantity: str) -> int:
    """'500m' -> 500, '2' -> 2000, '0.5' -> 500."""
    if quantity.endswith("m"):
        return int(quantity[:-1])
    return int(round(float(quantity) * 1000))


def memory_bytes(quantity: str) -> int:
    """'512Mi' -> 536870912."""
    m = MEMORY_RE.match(quantity)
    if not m:
        raise ValueError(f"not a binary-suffixed quantity: {quantity!r}")
    return int(m.group(1)) * MEMORY_UNITS[m.group(2)]


def mebibytes(quantity: str) -> int:
    return memory_bytes(quantity) // MIB
