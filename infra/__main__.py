"""Entry point of the Tikit platform program.

Runs unchanged under the Pulumi CLI (`main: infra/`, with infra/ first on sys.path) and
under the offline preview (`python -m preview`), which runs this very file in-process.
"""

import pulumi

import regions
import settings


def main() -> None:
    # Validate everything before a single resource is declared.
    cfg = settings.from_pulumi()
    platform = regions.Platform(cfg)
    pulumi.export("environment", cfg.environment)
    pulumi.export("primaryRegion", cfg.primary.name)
    pulumi.export("regions", platform.endpoints())


main()
