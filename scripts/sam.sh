#!/usr/bin/env bash
# Run the AWS SAM CLI offline: aws-sam-cli pins its own boto3/pydantic, so it lives in its own
# venv (.venv-sam, created on first use). No real credentials are needed for validate or build;
# fake ones keep botocore from looking for any.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SAM_VERSION=1.170.0

if [[ ! -x .venv-sam/bin/sam ]]; then
    echo "creating .venv-sam with aws-sam-cli==${SAM_VERSION}" >&2
    "$PYTHON" -m venv .venv-sam
    .venv-sam/bin/pip install --quiet "aws-sam-cli==${SAM_VERSION}"
fi

AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-testing} \
AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-testing} \
SAM_CLI_TELEMETRY=0 \
    exec .venv-sam/bin/sam "$@"
