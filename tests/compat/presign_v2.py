"""SigV2 presigned URLs as boto3 makes them with signature_version "s3" (older apps, the aws CLI
v1's default): GET, HEAD and PUT work within 7 days, with the key in any form and a signed
response override; a URL used for another method, carrying an added x-amz-* header, tampered
with, expired or valid for longer than 7 days is refused and changes nothing.
Needs ENDPOINT, AK, SK."""
import os
import time

import boto3
import requests
from botocore.config import Config

endpoint, ak, sk = (os.environ[k] for k in ("ENDPOINT", "AK", "SK"))
client = lambda version: boto3.client(
    "s3",
    endpoint_url=endpoint,
    aws_access_key_id=ak,
    aws_secret_access_key=sk,
    region_name="us-east-1",
    config=Config(signature_version=version, s3={"addressing_style": "path"}),
)
v2, v4 = client("s3"), client("s3v4")
v4.create_bucket(Bucket="v2-urls")
key = "a dir/ünï+code.txt"
url = lambda op, expires=300, **extra: v2.generate_presigned_url(
    op, Params={"Bucket": "v2-urls", "Key": key, **extra}, ExpiresIn=expires
)


def call(method, u, data=None, headers=None):
    r = requests.request(method, u, data=data, headers=headers)
    return r.status_code, r.content, r.headers


def refused(status, code, got):
    assert got[0] == status and (not code or f"<Code>{code}</Code>" in got[1].decode()), got


put = url("put_object")
assert "Signature=" in put and "X-Amz-Signature" not in put, put
assert call("PUT", put, b"through a v2 url")[0] == 200
status, body, _ = call("GET", url("get_object"))
assert (status, body) == (200, b"through a v2 url"), (status, body)
status, _, headers = call("HEAD", url("head_object"))
assert status == 200 and headers["Content-Length"] == "16", (status, headers)
override = url("get_object", ResponseContentDisposition="attachment; filename=x.txt")
status, _, headers = call("GET", override)
assert status == 200 and headers["Content-Disposition"] == "attachment; filename=x.txt", headers

# The method, the added header and every signed byte are covered.
refused(403, "SignatureDoesNotMatch", call("PUT", url("get_object"), b"replaced"))
refused(403, "SignatureDoesNotMatch", call("PUT", put, b"replaced", {"x-amz-meta-added": "1"}))
sig = put.rsplit("Signature=", 1)[1].split("&")[0]
forged = ("B" if sig[0] == "A" else "A") + sig[1:]
refused(403, "SignatureDoesNotMatch", call("PUT", put.replace(sig, forged), b"replaced"))
refused(403, "InvalidAccessKeyId", call("GET", url("get_object").replace(ak, "NOSUCHKEY")))
short = url("get_object", expires=1)
time.sleep(2.5)
refused(403, "AccessDenied", call("GET", short))
refused(400, "AuthorizationQueryParametersError", call("GET", url("get_object", expires=8 * 86400)))
refused(400, "InvalidRequest", call("DELETE", v2.generate_presigned_url(
    "delete_object", Params={"Bucket": "v2-urls", "Key": key}, ExpiresIn=300)))

assert v4.get_object(Bucket="v2-urls", Key=key)["Body"].read() == b"through a v2 url"
print("sigv2 presigned urls: ok")
