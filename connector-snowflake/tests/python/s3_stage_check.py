"""Reads a file our client PUT to an S3 stage (moto) with boto3, and decrypts it with
Snowflake's own connector code (SnowflakeEncryptionUtil, unchanged) and the stage's
master key, as Snowflake does when it loads the file.

Usage: s3_stage_check.py <endpoint> <bucket> <key> <master key base64> <expected content file>
Prints a JSON summary. Any exception fails the run.
"""

import gzip
import io
import json
import sys

import boto3
from snowflake.connector.encryption_util import SnowflakeEncryptionUtil
from snowflake.connector.constants import EncryptionMetadata
from snowflake.connector.storage_client import SnowflakeFileEncryptionMaterial

endpoint, bucket, key, master_key, expected_path = sys.argv[1:6]
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="testing",
    aws_secret_access_key="testing",
)
obj = s3.get_object(Bucket=bucket, Key=key)
meta = obj["Metadata"]
body = obj["Body"].read()
metadata = EncryptionMetadata(
    key=meta["x-amz-key"], iv=meta["x-amz-iv"], matdesc=meta["x-amz-matdesc"]
)
material = SnowflakeFileEncryptionMaterial(
    query_stage_master_key=master_key, query_id="", smk_id=0
)
out = io.BytesIO()
SnowflakeEncryptionUtil.decrypt_stream(metadata, material, io.BytesIO(body), out)
with open(expected_path, "rb") as f:
    expected = f.read()
assert gzip.decompress(out.getvalue()) == expected, "the decrypted file differs"
print(json.dumps({"digest": meta["sfc-digest"], "matdesc": json.loads(meta["x-amz-matdesc"]), "bytes": len(body)}))
