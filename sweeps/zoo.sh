#!/usr/bin/env bash
# The embedded default: build the zoo suites if missing, probe all three.
set -euo pipefail
python -m harness.zoo
python -m harness -m experiment=zoo model=zoo-neox,zoo-olmo,zoo-olmoe "$@"
