"""The web app's part of template.yaml against the local stack's: the page from a private
bucket through CloudFront, /api/* to the API's stage, and the same Content-Security-Policy the
local front door sends (local/sdlocal/webapp.py), but for where result pictures come from."""

from __future__ import annotations

import subprocess

from sdlocal import webapp
from tests.aws_template import resources


def _directives(csp: str) -> dict[str, str]:
    return {d.split(" ", 1)[0]: d.split(" ", 1)[1] for d in (p.strip() for p in csp.split(";"))}


def _sub_text(value: object) -> str:
    """The text of a !Sub (short or long form), as the loader keeps it."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        return sub if isinstance(sub, str) else sub[0]
    assert isinstance(value, str)
    return value


def test_the_page_s_bucket_is_private_and_read_only_by_the_distribution() -> None:
    bucket = resources("AWS::S3::Bucket")["WebBucket"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    policy = resources("AWS::S3::BucketPolicy")["WebBucketPolicy"]
    [statement] = policy["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "cloudfront.amazonaws.com"}
    assert statement["Action"] == "s3:GetObject"
    source = _sub_text(statement["Condition"]["StringEquals"]["AWS:SourceArn"])
    assert source.endswith(":distribution/${WebDistribution}")


def test_the_distribution_serves_the_page_and_passes_api_to_the_stage() -> None:
    config = resources("AWS::CloudFront::Distribution")["WebDistribution"]["DistributionConfig"]
    origins = {o["Id"]: o for o in config["Origins"]}
    assert "OriginAccessControlId" in origins["web"]
    assert _sub_text(origins["api"]["DomainName"]).startswith("${Api}.execute-api.")
    assert origins["api"]["OriginPath"] == "/v1"
    default = config["DefaultCacheBehavior"]
    assert default["TargetOriginId"] == "web" and "ResponseHeadersPolicyId" in default
    [api] = config["CacheBehaviors"]
    assert api["PathPattern"] == "/api/*" and api["TargetOriginId"] == "api"
    assert {"POST", "PUT", "DELETE"} <= set(api["AllowedMethods"])
    assert api["CachePolicyId"] == "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"  # CachingDisabled
    # AllViewerExceptHostHeader: Authorization goes through, Host does not (API Gateway)
    assert api["OriginRequestPolicyId"] == "b689b0a8-53d0-40ab-baf2-68738e2966ac"


def test_the_viewer_function_strips_the_api_prefix() -> None:
    [function] = resources("AWS::CloudFront::Function").values()
    code = function["FunctionCode"]
    script = (
        code
        + """
for (const [uri, want] of [["/api/txt2img", "/txt2img"], ["/api/tasks/x/result", "/tasks/x/result"],
                           ["/api", "/"], ["/apiary", "/apiary"]]) {
  const got = handler({request: {uri}}).uri;
  if (got !== want) { console.log(`${uri} -> ${got}, not ${want}`); process.exit(1); }
}
"""
    )
    run = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_csp_is_the_local_stack_s_but_for_where_signed_urls_point() -> None:
    policy = resources("AWS::CloudFront::ResponseHeadersPolicy")["WebHeadersPolicy"]
    headers = policy["ResponseHeadersPolicyConfig"]["SecurityHeadersConfig"]
    aws = _directives(_sub_text(headers["ContentSecurityPolicy"]["ContentSecurityPolicy"]))
    local = _directives(webapp.content_security_policy("http://127.0.0.1:7860"))
    assert set(aws) == set(local)
    signed = ("img-src", "connect-src")
    assert {k: v for k, v in aws.items() if k not in signed} == {
        k: v for k, v in local.items() if k not in signed
    }
    # signed S3 URLs, virtual-hosted (bucket.s3[.region].amazonaws.com): result pictures, and
    # the model parts the admin upload PUTs (locally both are the stack's own address)
    s3 = "https://*.s3.${AWS::URLSuffix} https://*.s3.${AWS::Region}.${AWS::URLSuffix}"
    assert aws["img-src"] == f"'self' data: blob: {s3}"
    assert aws["connect-src"] == f"'self' {s3}"
    assert local["connect-src"] == "'self'"
    assert headers["FrameOptions"]["FrameOption"] == "DENY"
    assert headers["ReferrerPolicy"]["ReferrerPolicy"] == "no-referrer"


def test_the_data_bucket_takes_part_puts_from_the_page_and_shows_their_etag() -> None:
    """The admin upload PUTs each part to its presigned S3 URL from the page's origin (the
    distribution's) with a Content-MD5 header, and reads the part's ETag from the answer."""
    [rule] = resources("AWS::S3::Bucket")["Bucket"]["CorsConfiguration"]["CorsRules"]
    origins = [_sub_text(o) for o in rule["AllowedOrigins"]]
    assert "https://${WebDistribution.DomainName}" in origins
    assert "PUT" in rule["AllowedMethods"]
    assert rule["AllowedHeaders"] == ["*"] or "Content-MD5" in rule["AllowedHeaders"]
    assert "ETag" in rule["ExposedHeaders"]
