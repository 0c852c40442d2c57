"""Image pins: every third-party image runs by digest from tikit/images.py, the refresh
command asks a registry (a local one here, with the bearer-token dance Docker Hub, GHCR and
Quay use), the deploy sets the app images by digest, and the policy refuses the rest."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from preview import images as image_tool, policies
from tikit import images, settings

DIGEST = "sha256:" + "d" * 64
OTHER = "sha256:" + "e" * 64


class Registry:
    """An OCI registry on 127.0.0.1 answering HEAD /v2/<name>/manifests/<tag> after a
    bearer-token challenge, as the public registries do."""

    def __init__(self, digests: dict[str, str]) -> None:
        self.digests = digests
        self.requests: list[tuple[str, str, str]] = []
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                registry.requests.append(("GET", self.path, self.headers.get("Authorization", "")))
                if self.path.startswith("/token?"):
                    body = json.dumps({"token": "t0ken"}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self.send_error(404)

            def do_HEAD(self) -> None:
                registry.requests.append(("HEAD", self.path, self.headers.get("Authorization", "")))
                if self.headers.get("Authorization") != "Bearer t0ken":
                    self.send_response(401)
                    realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
                    self.send_header("WWW-Authenticate", f'Bearer realm="{realm}",service="registry",scope="repository:x:pull"')
                    self.end_headers()
                    return
                m = re.fullmatch(r"/v2/(.+)/manifests/([^/]+)", self.path)
                digest = registry.digests.get(f"{m.group(1)}:{m.group(2)}") if m else None
                if not digest:
                    self.send_response(404)
                    self.end_headers()
                    return
                assert "application/vnd.oci.image.index.v1+json" in self.headers.get("Accept", "")
                self.send_response(200)
                self.send_header("Docker-Content-Digest", digest)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def registry():
    def path(pin: images.Pin) -> str:
        return pin.repository.split("/", 1)[1] + ":" + pin.tag

    served = {path(p): p.digest for p in images.PINS}
    moved = images.PINS[0]
    served[path(moved)] = OTHER
    reg = Registry(served)
    yield reg, moved
    reg.close()


def test_every_pin_is_a_tagged_digest_with_its_record():
    assert len({p.key for p in images.PINS}) == len(images.PINS)
    for pin in images.PINS:
        assert images.DIGEST_RE.match(pin.digest), pin.key
        assert pin.tag and "/" in pin.repository and "." in pin.repository.split("/")[0], pin.key
        assert len(pin.record) > 20 and "PENDING" not in pin.record, pin.key
        assert images.split(pin.ref) == (pin.repository, pin.tag, pin.digest)


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_every_third_party_image_rendered_is_a_pin(rendered, stack):
    refs = set()
    for r in rendered(stack).plan.kubernetes_objects():
        text = json.dumps(r.inputs)
        refs |= set(re.findall(r'"(?:image|imageName)": "([^"]+)"', text))
    third_party = {r for r in refs if not images.is_app(r)}
    assert third_party and third_party <= {p.ref for p in images.PINS}, third_party - {p.ref for p in images.PINS}
    assert {r for r in refs if images.is_app(r)}, "no app image rendered"


def test_refresh_reports_a_moved_tag_and_writes_the_new_digest(registry, tmp_path, capsys):
    reg, moved = registry
    copy = tmp_path / "images.py"
    copy.write_text(image_tool.IMAGES_FILE.read_text())
    assert image_tool.refresh(write=False, registry=reg.url, path=copy) == 1
    out = capsys.readouterr().out
    assert f"differs  {moved.repository}:{moved.tag}  pinned {moved.digest}  registry {OTHER}" in out
    assert out.count("same     ") == len(images.PINS) - 1
    assert copy.read_text() == image_tool.IMAGES_FILE.read_text()  # nothing written without --write
    # Every manifest request carried the token the challenge led to.
    heads = [r for r in reg.requests if r[0] == "HEAD" and r[2]]
    assert heads and {r[2] for r in heads} == {"Bearer t0ken"}

    assert image_tool.refresh(write=True, registry=reg.url, path=copy) == 0
    text = copy.read_text()
    assert OTHER in text and moved.digest not in text
    assert text.count("sha256:") == image_tool.IMAGES_FILE.read_text().count("sha256:")
    # The rewritten file is still the table: same keys, only that digest moved.
    namespace: dict = {}
    exec(compile(text, str(copy), "exec"), namespace)
    new = {p.key: p for p in namespace["PINS"]}
    assert new[moved.key].digest == OTHER and "read " in new[moved.key].record
    assert {k: p.digest for k, p in new.items() if k != moved.key} == {p.key: p.digest for p in images.PINS if p.key != moved.key}


def test_refresh_stops_with_one_line_when_a_registry_cannot_answer(tmp_path, capsys):
    reg = Registry({})
    copy = tmp_path / "images.py"
    copy.write_text(image_tool.IMAGES_FILE.read_text())
    try:
        assert image_tool.refresh(write=True, registry=reg.url, path=copy) == 2
        assert copy.read_text() == image_tool.IMAGES_FILE.read_text()
    finally:
        reg.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "HTTP 404" in err[0]


def repo_copy(tmp_path: Path) -> Path:
    for name in ("Pulumi.yaml", "Pulumi.dev.yaml", "Pulumi.staging.yaml", "Pulumi.prod.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


APP = {"backend": f"ghcr.io/tikit/backend:1.4.2@{DIGEST}", "worker": f"ghcr.io/tikit/worker:1.4.2@{OTHER}"}


def test_app_images_go_into_the_stack_file_by_digest(tmp_path):
    repo = repo_copy(tmp_path)
    rc = image_tool.app_main(["--stack", "prod", "--repo", str(repo), "--backend", APP["backend"], "--worker", APP["worker"]])
    assert rc == 0
    config = yaml.safe_load((repo / "Pulumi.prod.yaml").read_text())["config"]
    assert config["tikit:backend"]["image"] == APP["backend"] and config["tikit:workers"]["image"] == APP["worker"]
    # Everything else the stack file said is still there.
    before = yaml.safe_load((REPO / "Pulumi.prod.yaml").read_text())["config"]
    assert {k: v for k, v in config.items() if k not in ("tikit:backend", "tikit:workers")} == {
        k: v for k, v in before.items() if k not in ("tikit:backend", "tikit:workers")
    }


@pytest.mark.parametrize(
    "args, message",
    [
        (["--backend", "ghcr.io/tikit/backend:1.4.2"], "--backend: 'ghcr.io/tikit/backend:1.4.2' has no sha256 digest"),
        (["--backend", f"ghcr.io/tikit/backend@{DIGEST}"], "has no tag"),
        (["--worker", f"docker.io/evil/worker:1@{DIGEST}"], "is not one of the platform's repositories"),
        (["--backend", f"ghcr.io/tikit/backend:1@sha256:{'A' * 64}"], "has no sha256 digest"),
        ([], "give --backend and/or --worker"),
    ],
)
def test_a_bad_app_image_is_refused_and_nothing_is_written(tmp_path, capsys, args, message):
    repo = repo_copy(tmp_path)
    before = (repo / "Pulumi.prod.yaml").read_text()
    assert image_tool.app_main(["--stack", "prod", "--repo", str(repo), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("config error: ") and message in err[0], err
    assert (repo / "Pulumi.prod.yaml").read_text() == before


def test_the_deploy_step_sets_the_release_images_and_fails_without_them(tmp_path):
    wf = yaml.safe_load((REPO / ".github" / "workflows" / "deploy-stack.yml").read_text())
    (job,) = wf["jobs"].values()
    names = [s.get("name") or s.get("uses") for s in job["steps"]]
    step = next(s for s in job["steps"] if s.get("name") == "App images from the release")
    up = next(s for s in job["steps"] if str(s.get("uses", "")).startswith("pulumi/actions@"))
    assert names.index(step["name"]) < job["steps"].index(up)
    assert step["env"]["BACKEND_IMAGE"] == "${{ vars.TIKIT_BACKEND_IMAGE }}"
    assert "${{" not in step["run"]  # values arrive through env, never spliced into the script
    config = REPO / up["with"]["policyPackConfigs"]
    assert json.loads(config.read_text())["image-digest"]["requireAppDigest"] is True

    repo = repo_copy(tmp_path)
    (repo / ".venv" / "bin").mkdir(parents=True)
    wrapper = repo / ".venv" / "bin" / "python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)

    def run(backend: str, worker: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "STACK": "prod", "ENVIRONMENT": "production", "BACKEND_IMAGE": backend, "WORKER_IMAGE": worker}
        return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
                              cwd=repo, env=env, capture_output=True, text=True, timeout=60)  # fmt: skip

    missing = run("", APP["worker"])
    assert missing.returncode == 1 and "::error::environment production has no TIKIT_BACKEND_IMAGE" in missing.stdout
    done = run(APP["backend"], APP["worker"])
    assert done.returncode == 0, done.stderr
    config_doc = yaml.safe_load((repo / "Pulumi.prod.yaml").read_text())["config"]
    assert config_doc["tikit:backend"]["image"] == APP["backend"]


def test_the_deploy_policy_config_refuses_app_images_without_a_digest(rendered):
    plan = rendered("prod").plan
    deploy = json.loads((REPO / "policy" / "deploy-config.json").read_text())
    checked = policies.evaluate_config(plan, deploy)
    found = [f.message for f in checked.findings if f.policy == "image-digest"]
    assert found and all("has no digest; a deploy takes the platform's own images" in m for m in found)
    assert {m.split("image '")[1].split("'")[0] for m in found} == {
        settings.load({}, stack="prod").backend.image,
        settings.load({}, stack="prod").workers.image,
    }
    # The pull-request preview (no deploy config) accepts the tags of the stack files.
    assert not [f for f in policies.evaluate_config(plan, {}).findings if f.policy == "image-digest"]
