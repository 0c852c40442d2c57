"""preview/crds.py: exactly the pinned CRD files of tikit/versions.py, from a mirror or
downloaded (here from a local HTTP server laid out like raw.githubusercontent.com)."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import REPO
from preview import crds as fetch
from tikit import versions


def test_every_custom_resource_group_has_one_pinned_operator():
    groups = [g for o in versions.OPERATORS for g in o.groups]
    assert len(groups) == len(set(groups))
    for o in versions.OPERATORS:
        assert o.crds and all(c.files for c in o.crds)
        for c in o.crds:
            assert c.tag.startswith("v") and all(len(f.sha256) == 64 and f.served for f in c.files.values())


def test_the_table_says_what_each_pinned_crd_file_defines(crds):
    """Kinds and served versions in tikit/versions.py (the policy pack reads them) are those
    of the files themselves."""
    import yaml

    for release, file in versions.crd_files():
        doc = yaml.load((Path(crds) / release.folder / file).read_text(), Loader=yaml.CSafeLoader)
        entry = release.files[file]
        assert entry.kind == doc["spec"]["names"]["kind"], file
        assert entry.served == tuple(v["name"] for v in doc["spec"]["versions"] if v.get("served")), file
        assert file.split("_", 1)[0] == doc["spec"]["group"], file


def test_the_url_is_derived_from_the_table():
    c = versions.BY_KEY["keda"].crds[0]
    assert c.url("keda.sh_scaledobjects.yaml") == (
        "https://raw.githubusercontent.com/kedacore/keda/v2.20.2/config/crd/bases/keda.sh_scaledobjects.yaml"
    )


def test_a_complete_mirror_passes(crds):
    assert fetch.problems(Path(crds)) == []


def test_a_mirror_with_a_missing_or_altered_file_is_refused(crds, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    shutil.copytree(crds, mirror)
    (mirror / "keda" / "keda.sh_scaledobjects.yaml").unlink()
    altered = mirror / "cert-manager" / "cert-manager.io_issuers.yaml"
    altered.write_text(altered.read_text() + "\n# local edit\n")
    found = fetch.problems(mirror)
    assert "keda/keda.sh_scaledobjects.yaml is missing" in found
    assert any(p.startswith("cert-manager/cert-manager.io_issuers.yaml is not the file of") for p in found)
    monkeypatch.setenv(fetch.CRDS_ENV, str(mirror))
    with pytest.raises(fetch.CrdsUnavailable) as err:
        fetch.ensure()
    assert "\n" not in str(err.value) and "TIKIT_CRDS_DIR" in str(err.value)
    assert not (mirror / "keda" / "keda.sh_scaledobjects.yaml").exists()  # a mirror is never written


@pytest.fixture()
def http_mirror(crds, tmp_path):
    """raw.githubusercontent.com's layout (<repo>/<tag>/<path>) served on 127.0.0.1."""
    root = tmp_path / "raw"
    for release, file in versions.crd_files():
        target = root / release.repo / release.tag / release.directory / file
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(crds) / release.folder / file, target)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.RequestHandlerClass.log_message = lambda *a, **k: None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_downloads_exactly_the_pinned_files_and_checks_them(http_mirror, tmp_path, monkeypatch):
    root, base = http_mirror
    cache = tmp_path / "cache"
    monkeypatch.setenv(fetch.BASE_URL_ENV, base)
    fetched = fetch.ensure(cache, download=True)
    assert len(fetched) == len(versions.crd_files()) and fetch.problems(cache) == []
    assert fetch.ensure(cache, download=True) == []  # complete: nothing fetched again
    # A file that differs upstream from its pinned sum is refused, and not kept.
    (cache / "keda" / "keda.sh_scaledobjects.yaml").unlink()
    served = root / "kedacore/keda/v2.20.2/config/crd/bases/keda.sh_scaledobjects.yaml"
    served.write_text(served.read_text() + "# tampered\n")
    with pytest.raises(fetch.CrdsUnavailable, match="not the pinned"):
        fetch.ensure(cache, download=True)
    assert not (cache / "keda" / "keda.sh_scaledobjects.yaml").exists()


@pytest.mark.slow
def test_without_mirror_or_network_the_command_stops_at_once_with_one_line(tmp_path):
    """A fresh checkout, no TIKIT_CRDS_DIR, downloads pointed at a closed local port."""
    env = {k: v for k, v in os.environ.items() if k != fetch.CRDS_ENV}
    env[fetch.BASE_URL_ENV] = "http://127.0.0.1:9"
    copy = tmp_path / "checkout"
    shutil.copytree(REPO / "preview", copy / "preview", ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run(
        [sys.executable, "-m", "preview", "crds"], cwd=copy, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: cannot download http://127.0.0.1:9/")
    assert "make crds" in result.stderr and "TIKIT_CRDS_DIR" in result.stderr
