"""boto3 over TLS: PutObject and multipart uploads arrive as aws-chunked bodies with a CRC
trailer, which the gateway must decode and verify. Needs ENDPOINT, AK, SK, WORK, CA_BUNDLE."""
import os

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

endpoint, ak, sk, work, ca = (os.environ[k] for k in ("ENDPOINT", "AK", "SK", "WORK", "CA_BUNDLE"))
assert endpoint.startswith("https://")
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    aws_access_key_id=ak,
    aws_secret_access_key=sk,
    region_name="us-east-1",
    verify=ca,
    config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
)
s3.create_bucket(Bucket="tls")
body = os.urandom(3 * 1024 * 1024 + 7)
r = s3.put_object(Bucket="tls", Key="chunked.bin", Body=body)
assert r.get("ChecksumCRC32"), r  # verified from the trailer and echoed back
head = s3.head_object(Bucket="tls", Key="chunked.bin", ChecksumMode="ENABLED")
assert head["ChecksumCRC32"] == r["ChecksumCRC32"], head
assert s3.get_object(Bucket="tls", Key="chunked.bin")["Body"].read() == body

src = os.path.join(work, "mp.bin")
with open(src, "wb") as f:
    f.write(os.urandom(11 * 1024 * 1024))
cfg = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
s3.upload_file(src, "tls", "mp.bin", Config=cfg)
assert s3.get_object(Bucket="tls", Key="mp.bin")["Body"].read() == open(src, "rb").read()
print("boto3 over TLS: ok")
