#!/usr/bin/env bash
# Create the virtualenv (installing Debian's python3-venv if the interpreter lacks it)
# and install a requirements file into it.
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}
requirements=${3:-requirements.txt}

if [ ! -x "$venv/bin/python" ]; then
  if ! "$python" -m venv "$venv" 2>/dev/null; then
    rm -rf "$venv"
    echo "bootstrap: $python cannot create a venv; installing python3-venv" >&2
    apt_get=apt-get; [ "$(id -u)" = 0 ] || apt_get="sudo apt-get"
    $apt_get update -qq && DEBIAN_FRONTEND=noninteractive $apt_get install -y -qq python3-venv
    "$python" -m venv "$venv"
  fi
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements"
