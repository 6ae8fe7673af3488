#!/usr/bin/env bash
# Upload the web app to a deployed stack: build it with the API at /api (CloudFront passes
# /api/* to the API's stage, template.yaml WebDistribution), copy it to the stack's WebBucket,
# and invalidate CloudFront's copies. Needs the AWS CLI and credentials for the stack's account.
# usage: scripts/deploy-web.sh <stack-name>
set -euo pipefail
cd "$(dirname "$0")/.."
stack=${1:?usage: scripts/deploy-web.sh <stack-name>}
output() {
  aws cloudformation describe-stacks --stack-name "$stack" \
    --query "Stacks[0].Outputs[?OutputKey=='$1'].OutputValue" --output text
}
bucket=$(output WebBucketName)
distribution=$(output WebDistributionId)
(cd web && npm ci --no-audit --no-fund --loglevel=error \
  && SD_WEB_API_BASE=/api SD_WEB_OUT=dist-aws npm run --silent build)
# no-cache: browsers and CloudFront revalidate, so a new build shows at once (the files are small)
aws s3 sync web/dist-aws "s3://$bucket/" --delete --cache-control "no-cache"
aws cloudfront create-invalidation --distribution-id "$distribution" --paths "/*" >/dev/null
echo "web app deployed: $(output WebUrl)"
