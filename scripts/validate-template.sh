#!/usr/bin/env bash
# Check template.yaml with cfn-lint and with `sam validate --lint`. Offline; needs no credentials.
set -euo pipefail

cd "$(dirname "$0")/.."

CFN_LINT=${CFN_LINT:-.venv/bin/cfn-lint}
if [[ ! -x "$CFN_LINT" ]]; then
    CFN_LINT=$(command -v cfn-lint || true)
fi
if [[ -z "$CFN_LINT" ]]; then
    echo "cfn-lint not found: install the dev dependencies into .venv first" >&2
    exit 2
fi

echo "== cfn-lint template.yaml" >&2
"$CFN_LINT" template.yaml

echo "== sam validate --lint" >&2
bash scripts/sam.sh validate --lint --region us-east-1 --template-file template.yaml

echo "template.yaml is valid" >&2
