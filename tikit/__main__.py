"""Entry point of the Tikit platform program (Pulumi.yaml: `main: tikit/`).

The Pulumi CLI runs this file with tikit/ first on sys.path; every import is absolute
(`tikit.*`, the package installed into the project's virtualenv), so no module here is
found under a second name.
"""

from tikit.program import main

main()
