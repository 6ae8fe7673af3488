#!/usr/bin/env bash
# Check template.yaml with cfn-lint and with `sam validate --lint`. Offline; needs no credentials.
# aws-sam-cli pins its own boto3/pydantic, so it lives in its own venv (.venv-sam).
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SAM_VERSION=1.170.0

if [[ ! -x .venv-sam/bin/sam ]]; then
    echo "creating .venv-sam with aws-sam-cli==${SAM_VERSION}" >&2
    "$PYTHON" -m venv .venv-sam
    .venv-sam/bin/pip install --quiet "aws-sam-cli==${SAM_VERSION}"
fi

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
# No real credentials are needed offline; fake ones keep botocore from looking for any.
AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-testing} \
AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-testing} \
SAM_CLI_TELEMETRY=0 \
    .venv-sam/bin/sam validate --lint --region us-east-1 --template-file template.yaml

echo "template.yaml is valid" >&2
