"""The rendered k6 script, executed: Node.js loads it as the ES module k6 would, with small
stand-ins for the `k6` and `k6/http` modules that record what the script asks of them.

That proves the text is valid JavaScript, exports the notes' options (stages and
thresholds) as data, and that one iteration GETs the public URL, applies the two checks
(which pass on a fast 200 and fail on a slow 503) and sleeps the think time.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tikit import settings
from tikit.conf import loadtest
from conftest import require_binary

pytestmark = pytest.mark.integration

STUBS = {
    "package.json": json.dumps(
        {"name": "k6", "type": "module", "exports": {".": "./index.js", "./http": "./http.js"}}
    ),
    "index.js": """
export const calls = globalThis.__k6calls = globalThis.__k6calls || [];
export function check(value, checks) {
  const results = Object.fromEntries(Object.entries(checks).map(([name, f]) => [name, f(value)]));
  calls.push(['check', results]);
  return Object.values(results).every(Boolean);
}
export function sleep(seconds) { calls.push(['sleep', seconds]); }
""",
    "http.js": """
const calls = globalThis.__k6calls = globalThis.__k6calls || [];
export default {
  get(url) {
    calls.push(['get', url]);
    return JSON.parse(process.env.K6_STUB_RESPONSE);
  },
};
""",
}

RUN = """
const script = await import(process.argv[2]);
script.default();
console.log(JSON.stringify({options: script.options, calls: globalThis.__k6calls}));
"""


def run_script(tmp_path: Path, text: str, response: dict) -> dict:
    node = require_binary("node")
    stubs = tmp_path / "node_modules" / "k6"
    stubs.mkdir(parents=True)
    for name, body in STUBS.items():
        (stubs / name).write_text(body)
    script = tmp_path / "load-test.mjs"
    script.write_text(text)
    (tmp_path / "run.mjs").write_text(RUN)
    out = subprocess.run(
        [node, str(tmp_path / "run.mjs"), str(script)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={"K6_STUB_RESPONSE": json.dumps(response), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_rendered_script_runs_as_the_notes_load_test(tmp_path, stack):
    cfg = settings.load({}, stack=stack)
    text = loadtest.k6_script(cfg.resilience, cfg.gateway, cfg.monitoring)
    fast_ok = run_script(tmp_path / "ok", text, {"status": 200, "timings": {"duration": 120}})
    options = fast_ok["options"]
    assert options["stages"] == [
        {"duration": "2m", "target": 100},
        {"duration": "5m", "target": 100},
        {"duration": "2m", "target": 1000},
        {"duration": "5m", "target": 1000},
        {"duration": "2m", "target": 0},
    ]
    assert options["thresholds"] == {"http_req_duration": ["p(95)<500"], "http_req_failed": ["rate<0.01"]}
    assert fast_ok["calls"] == [
        ["get", f"https://{cfg.gateway.hostname}/api/events"],
        ["check", {"status is 200": True, "response time < 500ms": True}],
        ["sleep", 1],
    ]
    slow_error = run_script(tmp_path / "bad", text, {"status": 503, "timings": {"duration": 700}})
    assert slow_error["calls"][1] == ["check", {"status is 200": False, "response time < 500ms": False}]
