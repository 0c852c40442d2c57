"""The program runs the way the Pulumi CLI runs it: tikit/ as the main directory and first on
sys.path, config from PULUMI_CONFIG, the repository root not on sys.path (the package is
installed into the virtualenv, as `pip install -r requirements.txt` installs it)."""

from __future__ import annotations

import pytest

import json
import os
import subprocess
import sys

from conftest import REPO

SCRIPT = r"""
import json, runpy, sys, os
sys.path = [p for p in sys.path if os.path.realpath(p or '.') != os.path.realpath(os.environ['REPO'])]
sys.path.insert(0, os.path.join(os.environ['REPO'], 'tikit'))
os.chdir(os.path.join(os.environ['REPO'], 'tikit'))
import pulumi
from pulumi.runtime import mocks

class Echo(pulumi.runtime.Mocks):
    # Inputs echoed back, plus the computed outputs the random provider would return.
    def new_resource(self, args):
        state = dict(args.inputs)
        if args.typ.endswith('RandomPassword'):
            state['result'] = 'p' * int(args.inputs['length'])
        if args.typ.endswith('RandomBytes'):
            raw = b'\x01' * int(args.inputs['length'])
            state['base64'], state['hex'] = __import__('base64').b64encode(raw).decode(), raw.hex()
        return args.name + '-id', state
    def call(self, args):
        return {}, None

names = []
class Monitor(mocks.MockMonitor):
    def RegisterResource(self, request):
        names.append(request.type + '::' + request.name)
        return super().RegisterResource(request)

pulumi.runtime.set_mocks(Echo(), project='tikit', stack='staging', preview=False, monitor=Monitor(Echo()))
runpy.run_path('__main__.py', run_name='__main__')
from pulumi.runtime.sync_await import _sync_await
from pulumi.runtime.stack import wait_for_rpcs
_sync_await(wait_for_rpcs())
assert 'preview' not in sys.modules, 'the program must not import the offline preview'
# Every module of the program was imported once, as part of the package: none under a
# second, top-level name through tikit/ being first on sys.path.
top = sorted(n for n in sys.modules if n.split('.')[0] in ('settings', 'regions', 'kube', 'names', 'components', 'conf', 'program'))
assert top == [], top
print(json.dumps(sorted(names)))
"""


@pytest.mark.slow
def test_program_runs_with_tikit_as_main_directory():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["REPO"] = str(REPO)
    env["PULUMI_CONFIG"] = json.dumps({"tikit:environment": "staging", "tikit:renderOnly": "true"})
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120, cwd="/")
    assert result.returncode == 0, result.stderr[-2000:]
    registered = json.loads(result.stdout.strip().splitlines()[-1])
    assert "kubernetes:core/v1:Namespace::namespace-lagos" in registered
    assert "kubernetes:core/v1:Namespace::namespace-london" in registered
