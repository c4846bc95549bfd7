"""EICAR through every way a real client uploads: aws CLI single PUT, boto3 multipart with the
virus in a middle part, a zip, a presigned PUT. Each is refused with VirusDetected and leaves
nothing listed; a clean file passes and reads back with scan-status=clean.

Env: ENDPOINT, AK, SK, WORK, BIN (the venv's bin), BUCKET (created here).
"""
import io
import os
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

E, AK, SK, WORK, BIN, B = (os.environ[k] for k in ("ENDPOINT", "AK", "SK", "WORK", "BIN", "BUCKET"))
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
SIG = "Eicar-Test-Signature"
MIB = 1024 * 1024

s3 = boto3.client(
    "s3",
    endpoint_url=E,
    aws_access_key_id=AK,
    aws_secret_access_key=SK,
    region_name="us-east-1",
    config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                  retries={"max_attempts": 1}),
)
s3.create_bucket(Bucket=B)


def refused(what, fn):
    try:
        fn()
    except ClientError as e:
        err = e.response["Error"]
        assert err["Code"] == "VirusDetected", (what, err)
        assert SIG in err["Message"], (what, err)
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 403, (what, e.response)
        return
    raise AssertionError(f"{what}: the upload was accepted")


def aws(*args):
    env = dict(os.environ, AWS_ACCESS_KEY_ID=AK, AWS_SECRET_ACCESS_KEY=SK,
               AWS_DEFAULT_REGION="us-east-1", AWS_MAX_ATTEMPTS="1")
    return subprocess.run([os.path.join(BIN, "aws"), "--endpoint-url", E, *args],
                          env=env, capture_output=True, text=True)


# 1. aws CLI, single PUT.
path = os.path.join(WORK, "invoice.txt")
with open(path, "wb") as f:
    f.write(b"Invoice 42\n" + EICAR + b"\n")
r = aws("s3", "cp", path, f"s3://{B}/cli/invoice.txt")
assert r.returncode != 0, r
assert "VirusDetected" in r.stderr and SIG in r.stderr, r.stderr

# 2. boto3 multipart, the virus in the middle part: parts are not scanned one by one; the whole
# object is scanned at completion, reading the parts back in order.
key = "mp/contract.bin"
up = s3.create_multipart_upload(Bucket=B, Key=key)["UploadId"]
bodies = [os.urandom(5 * MIB), os.urandom(2 * MIB) + EICAR + os.urandom(3 * MIB), b"tail"]
parts = []
for n, body in enumerate(bodies, start=1):
    etag = s3.upload_part(Bucket=B, Key=key, UploadId=up, PartNumber=n, Body=body)["ETag"]
    parts.append({"PartNumber": n, "ETag": etag})
refused("multipart", lambda: s3.complete_multipart_upload(
    Bucket=B, Key=key, UploadId=up, MultipartUpload={"Parts": parts}))
assert not s3.list_multipart_uploads(Bucket=B).get("Uploads"), "the infected upload stays open"

# 3. Inside a zip.
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("readme.txt", "hello")
    z.writestr("tools/eicar.com", EICAR)
refused("zip", lambda: s3.put_object(Bucket=B, Key="zip/archive.zip", Body=buf.getvalue()))

# 4. A presigned PUT (what a browser upload would use).
url = s3.generate_presigned_url("put_object", Params={"Bucket": B, "Key": "presigned/x.bin"},
                                ExpiresIn=300)
try:
    urllib.request.urlopen(urllib.request.Request(url, data=EICAR, method="PUT"))
    raise AssertionError("presigned: the upload was accepted")
except urllib.error.HTTPError as e:
    body = e.read().decode()
    assert e.code == 403 and "<Code>VirusDetected</Code>" in body and SIG in body, (e.code, body)

# Nothing of it is visible.
listed = s3.list_objects_v2(Bucket=B).get("Contents", [])
assert listed == [], listed

# 5. A clean file passes, and says so.
clean = os.path.join(WORK, "clean.txt")
with open(clean, "wb") as f:
    f.write(b"a perfectly harmless contract\n" * 100)
r = aws("s3", "cp", clean, f"s3://{B}/clean.txt")
assert r.returncode == 0, r.stderr
tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=B, Key="clean.txt")["TagSet"]}
assert tags == {"scan-status": "clean"}, tags
head = s3.head_object(Bucket=B, Key="clean.txt")["ResponseMetadata"]["HTTPHeaders"]
assert head["x-portcullis-scan-status"] == "clean", head
assert head["x-portcullis-scan-engine"].startswith("ClamAV"), head
assert head["x-portcullis-detected-type"] == "text/plain", head
assert s3.get_object(Bucket=B, Key="clean.txt")["Body"].read() == open(clean, "rb").read()
print("protection: ok")
sys.exit(0)
