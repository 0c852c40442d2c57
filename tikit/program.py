"""The program: validate the stack's settings, declare every region, export what users need.

`tikit/__main__.py` calls ``main()`` under the Pulumi CLI (`main: tikit/`); the offline
preview calls it in-process through the SDK's mock engine.
"""

from __future__ import annotations

import pulumi

from tikit import regions, settings


def main() -> None:
    # Validate everything before a single resource is declared.
    cfg = settings.from_pulumi()
    platform = regions.Platform(cfg)
    pulumi.export("environment", cfg.environment)
    pulumi.export("primaryRegion", cfg.primary.name)
    pulumi.export("regions", platform.endpoints())
