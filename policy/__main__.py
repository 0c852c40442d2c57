"""Entry point the Pulumi CLI runs for `--policy-pack policy`: it only builds the pack.

PolicyPack() starts the analyzer's gRPC server and blocks, so the policies themselves live
in the importable tikit_policies package (the offline preview imports them from there)."""

from pulumi_policy import PolicyPack

from tikit_policies import ALL, ENFORCEMENT, PACK_NAME

PolicyPack(name=PACK_NAME, policies=ALL, enforcement_level=ENFORCEMENT)
