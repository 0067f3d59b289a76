#!/usr/bin/env bash
# The published study: Pythia 1B, OLMo 1B 0724 and OLMoE 1B-7B 0924 at the study's ten revisions.
set -euo pipefail
python -m harness -m experiment=paper model=pythia-1b,olmo-1b-0724,olmoe-1b-7b-0924 "$@"
