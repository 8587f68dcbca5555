#!/usr/bin/env bash
# Install what the tests need (first run only) and run the whole test suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$(bash "$root/scripts/setup_env.sh" | tail -n 1)"
bash "$root/scripts/setup_label_env.sh"
bash "$root/scripts/setup_orthanc.sh"
cd "$root"
exec "$venv/bin/python" -m pytest -q "$@"
