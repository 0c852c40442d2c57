"""The tikit policy pack: every policy object, grouped by area.

``policy/__main__.py`` builds the pack from ``ALL`` for the Pulumi CLI; the offline
preview (preview/policies.py) imports the very same objects and runs them over its plan.
"""

from pulumi_policy import EnforcementLevel

from . import addons, capacity, failure, hygiene, nodes, reliability, secrets

PACK_NAME = "tikit"
# Policies state their own level; this is the pack default for any that does not.
ENFORCEMENT = EnforcementLevel.MANDATORY

AREAS = {
    "hygiene": hygiene.POLICIES,
    "reliability": reliability.POLICIES,
    "failure": failure.POLICIES,
    "capacity": capacity.POLICIES,
    "nodes": nodes.POLICIES,
    "secrets": secrets.POLICIES,
    "addons": addons.POLICIES,
}
ALL = [policy for policies in AREAS.values() for policy in policies]

__all__ = ["ALL", "AREAS", "ENFORCEMENT", "PACK_NAME"]
