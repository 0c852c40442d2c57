#!/usr/bin/env bash
# Create the virtualenv (installing Debian's python3-venv if the interpreter lacks it)
# and install a requirements file into it.  The project needs Python 3.11 or newer: an
# older interpreter is refused, and a .venv built by one (or with no interpreter left) is
# rebuilt.
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}
requirements=${3:-requirements.txt}
min_major=3 min_minor=11

recent_enough() {  # recent_enough <python>: true when it runs and is at least 3.11
  "$1" -c "import sys; sys.exit(sys.version_info[:2] < ($min_major, $min_minor))" 2>/dev/null
}

if ! command -v "$python" >/dev/null 2>&1; then
  echo "bootstrap: $python not found; tikit-infra needs Python $min_major.$min_minor or newer (make PYTHON=python3.11 ...)" >&2
  exit 1
fi
if ! recent_enough "$python"; then
  version=$("$python" -c 'import platform; print(platform.python_version())' 2>/dev/null || echo unknown)
  echo "bootstrap: $python is Python $version; tikit-infra needs Python $min_major.$min_minor or newer (make PYTHON=python3.11 ...)" >&2
  exit 1
fi

if [ -e "$venv" ] && ! recent_enough "$venv/bin/python"; then
  echo "bootstrap: $venv has no working Python $min_major.$min_minor+; recreating it" >&2
  rm -rf "$venv"
fi
if [ ! -x "$venv/bin/python" ]; then
  if ! "$python" -m venv "$venv" 2>/dev/null; then
    rm -rf "$venv"
    echo "bootstrap: $python cannot create a venv; installing python3-venv" >&2
    # sudo drops most of the environment, so the variable goes through env after it.
    apt_get="env DEBIAN_FRONTEND=noninteractive apt-get"; [ "$(id -u)" = 0 ] || apt_get="sudo $apt_get"
    $apt_get update -qq && $apt_get install -y -qq python3-venv
    "$python" -m venv "$venv"
  fi
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements"
