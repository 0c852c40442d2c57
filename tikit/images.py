"""Every third-party image the platform runs, pinned as ``name:tag@sha256:…``.

A tag can move (an official image is rebuilt when its base changes); a digest cannot. Each
digest below is copied from a public record of that build, named beside it, never typed
by hand. The tag stays in the reference for people; the runtime pulls by digest.

These are the defaults of the image settings (a stack may override one, with a digest in
staging and prod: the ``image-digest`` policy). The platform's own images (API, workers)
are not here: their digest comes from the release that builds them, and the deploy
workflow sets it in the stack config (docs/images.md).

``python -m preview images`` (``make images``) asks each registry for the digest its tag
points at today and shows where the pins differ; ``--write`` updates this table. It needs
the registries; nothing else in the repository does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
# Repositories of the platform's own images, built by its release pipeline.
APP_REPOSITORIES = ("ghcr.io/tikit/",)


@dataclass(frozen=True)
class Pin:
    key: str
    repository: str  # registry host and path, e.g. docker.io/library/redis
    tag: str
    digest: str
    record: str  # the public record the digest is copied from

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}@{self.digest}"


PINS: tuple[Pin, ...] = (
    Pin(
        key="redis",
        repository="docker.io/library/redis",
        tag="7.4.2",
        digest="sha256:7e880ff9649ce77761ed7b5532a7147ca1c29202ce988ed3a91beee66a1be767",
        record="docker-library/repo-info repos/redis/remote/7.4.2.md, build of 2025-04-08 (image index, 16 platforms)",
    ),
    Pin(
        key="redis-exporter",
        repository="quay.io/oliver006/redis_exporter",
        tag="v1.67.0",
        digest="sha256:120f7ec77293459ccfdad66bb1db75ab72e8bfeab99f58b1cc2564cadcd7a9e7",
        record="gitpod-io/gitpod install/installer/pkg/components/redis/constants.go @a5847d2 (PR 20504: the index of the then-latest v1.67.0)",
    ),
    Pin(
        key="rclone",
        repository="docker.io/rclone/rclone",
        tag="1.68.2",
        digest="sha256:74c51b8817e5431bd6d7ed27cb2a50d8ee78d77f6807b72a41ef6f898845942b",
        record="rocapellino/pokedex docs/operations/GDRIVE_BACKUP_GUIDE.md @30ed95e (multi-arch index)",
    ),
    Pin(
        key="postgresql",
        repository="ghcr.io/cloudnative-pg/postgresql",
        tag="17.6-202511100807-system-bullseye",
        digest="sha256:30b304a2e300ed80b6d1b740e4369e9b0f25599fb518de78c01fd9f25531791b",
        record="cloudnative-pg/artifacts image-catalogs/catalog-system-bullseye.yaml @6093183 (the published ClusterImageCatalog)",
    ),
    Pin(
        key="pgbouncer",
        repository="ghcr.io/cloudnative-pg/pgbouncer",
        tag="1.25.1",
        digest="sha256:e6ddfe22d845e603825e235dd8334b21ecd125abea2a2172478f556b8dee2bb8",
        record="hakopod/hakopod internal/cluster/database_pooling.go @d718372 and BZandi/inqtrix "
        "deploy/compose/compose.stack.yaml @e600538 (as 1.25.1-trixie, the same build)",
    ),
    Pin(
        key="pgbouncer-exporter",
        repository="quay.io/prometheuscommunity/pgbouncer-exporter",
        tag="v0.12.1",
        digest="sha256:30f31b6c2efdad3647f8182cc7c1a3a19e42bae5d17387694989f969371c230d",
        record="ollygarden/grafts receiver/pgbouncerreceiver/telemetry/component.yaml @95bca87",
    ),
    Pin(
        key="k6",
        repository="docker.io/grafana/k6",
        tag="1.3.0",
        digest="sha256:3ddc8b1a33a2c3d8edc6e99b6a762ae36cba08788463458f5e6a7703e14eb77d",
        record="go-vela/vela-k6 Dockerfile @4c2e1c1 (Renovate pin of the 1.3.0 release)",
    ),
    Pin(
        key="pause",
        repository="registry.k8s.io/pause",
        tag="3.10",
        digest="sha256:ee6521f290b2168b6e0935a181d4cff9be1ac3f505666ef0e3c98fae8199917a",
        record="kubernetes/k8s.io registry.k8s.io/images/k8s-staging-kubernetes/images.yaml @ecf019a (the image promoter's manifest)",
    ),
    Pin(
        # A shell and kubectl 1.31 in one image (the restore drill creates, watches and
        # deletes its Cluster and execs psql); kubectl 1.31 speaks to API servers 1.30-1.32.
        key="kubectl",
        repository="docker.io/alpine/k8s",
        tag="1.31.1",
        digest="sha256:dfe8c7a06c41d0b6e8757da99531f8f302e9a2687fa0155af4c4087df585c9c8",
        record="policy-as-versioned-code/policy-checker Dockerfile @9021238 (Renovate pull request 80, the 1.31.1 index)",
    ),
    Pin(
        key="curl",
        repository="docker.io/curlimages/curl",
        tag="8.11.1",
        digest="sha256:c1fe1679c34d9784c1b0d1e5f62ac0a79fca01fb6377cdd33e90473c6f9f9a69",
        record="konflux-ci/caching tests/e2e/nginx_access_log_format_test.go @2d9b857 (multi-arch index)",
    ),
)

BY_KEY = {p.key: p for p in PINS}


def ref(key: str) -> str:
    return BY_KEY[key].ref


def split(image: str) -> tuple[str, str, str]:
    """(repository, tag, digest) of a reference; tag and digest may be ''."""
    name, _, digest = image.partition("@")
    head, _, last = name.rpartition("/")
    repo_last, _, tag = last.partition(":")
    return (f"{head}/{repo_last}" if head else repo_last), tag, digest


def is_app(image: str) -> bool:
    return image.startswith(APP_REPOSITORIES)


__all__ = ["APP_REPOSITORIES", "BY_KEY", "DIGEST_RE", "PINS", "Pin", "ref", "split", "is_app"]
