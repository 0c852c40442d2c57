"""kube.workload's scanner skips: each appears only where the pod spec gives its reason."""

from __future__ import annotations

from tikit import images, kube


def spec(*containers: dict, **pod) -> dict:
    return {"template": {"spec": {"containers": list(containers), **pod}}}


APP = {"name": "api", "image": "ghcr.io/tikit/backend:1.0.0", "resources": {"requests": {"cpu": "1"}, "limits": {"memory": "1Gi"}},
       "env": [{"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}}]}


def test_a_skip_needs_its_reason_in_the_spec():
    assert kube.scanner_skips(spec(APP)) == [kube.CPU_LIMIT_CHECK, kube.SECRET_ENV_CHECK, kube.DIGEST_CHECK, kube.PULL_ALWAYS_CHECK]
    pinned = {**APP, "image": f"ghcr.io/tikit/backend:1.0.0@sha256:{'a' * 64}", "env": [],
              "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "1", "memory": "1Gi"}}}
    assert kube.scanner_skips(spec(pinned)) == []
    # A third-party image pinned by tag alone gets no skip: the scan must fail on it.
    third = {**pinned, "image": "docker.io/library/redis:7.4.2"}
    assert not images.is_app(third["image"]) and kube.scanner_skips(spec(third)) == []
    assert kube.scanner_skips(spec(pinned), placeholder=True) == [kube.LIVENESS_CHECK, kube.READINESS_CHECK]
    assert kube.scanner_skips(spec(pinned, automountServiceAccountToken=True)) == [kube.SA_TOKEN_CHECK]


def test_cronjob_specs_and_init_containers_count_too():
    job = {"jobTemplate": {"spec": {"template": {"spec": {"initContainers": [APP], "containers": []}}}}}
    assert kube.CPU_LIMIT_CHECK in kube.scanner_skips(job)


def test_annotations_carry_a_reason_checkov_can_parse():
    notes = kube.scanner_annotations(spec(APP), placeholder=True)
    assert list(notes) == [f"checkov.io/skip{i}" for i in range(1, 7)]
    for value in notes.values():
        check, reason = value.split("=", 1)
        assert check in kube.SCANNER_REASONS and "=" not in reason and len(reason) > 40
