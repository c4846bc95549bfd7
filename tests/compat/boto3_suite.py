"""boto3 against Portcullis: multipart upload_file with the SDK's default checksums, download,
presigned PUT/GET, paginated listing and batch delete. Needs ENDPOINT, AK, SK, WORK."""
import hashlib
import os
import sys
import urllib.request

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

endpoint, ak, sk, work = (os.environ[k] for k in ("ENDPOINT", "AK", "SK", "WORK"))
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    aws_access_key_id=ak,
    aws_secret_access_key=sk,
    region_name="us-east-1",
    config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
)

s3.create_bucket(Bucket="boto")
src = os.path.join(work, "upload.bin")
with open(src, "wb") as f:
    f.write(os.urandom(17 * 1024 * 1024 + 123))
cfg = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
s3.upload_file(src, "boto", "nested/upload.bin", Config=cfg)
head = s3.head_object(Bucket="boto", Key="nested/upload.bin", ChecksumMode="ENABLED")
assert head["ContentLength"] == 17 * 1024 * 1024 + 123, head
assert head["ETag"].endswith('-4"'), head["ETag"]
dst = os.path.join(work, "download.bin")
s3.download_file("boto", "nested/upload.bin", dst, Config=cfg)
digest = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()
assert digest(src) == digest(dst), "download differs"

# put_object sends a CRC32 by default; it is verified and returned.
r = s3.put_object(Bucket="boto", Key="small.txt", Body=b"hello boto")
assert r.get("ChecksumCRC32"), r

put_url = s3.generate_presigned_url("put_object", Params={"Bucket": "boto", "Key": "presigned.txt"}, ExpiresIn=300)
req = urllib.request.Request(put_url, data=b"presigned body", method="PUT")
assert urllib.request.urlopen(req).status == 200
get_url = s3.generate_presigned_url("get_object", Params={"Bucket": "boto", "Key": "presigned.txt"}, ExpiresIn=300)
assert urllib.request.urlopen(get_url).read() == b"presigned body"

for i in range(25):
    s3.put_object(Bucket="boto", Key=f"page/{i:03}", Body=b"x")
keys = []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket="boto", Prefix="page/", PaginationConfig={"PageSize": 7}):
    keys += [o["Key"] for o in page.get("Contents", [])]
assert keys == [f"page/{i:03}" for i in range(25)], keys

everything = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket="boto") for o in p.get("Contents", [])]
s3.delete_objects(Bucket="boto", Delete={"Objects": [{"Key": k} for k in everything]})
assert s3.list_objects_v2(Bucket="boto")["KeyCount"] == 0
try:
    s3.get_object(Bucket="boto", Key="small.txt")
    sys.exit("deleted object still readable")
except s3.exceptions.NoSuchKey:
    pass
s3.delete_bucket(Bucket="boto")
print("boto3: ok")
