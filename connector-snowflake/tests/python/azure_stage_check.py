"""Microsoft's Azure Blob client and Snowflake's own connector code on an Azure stage
(Azurite) our client PUT a file to.

Usage:
  azure_stage_check.py sas <blob endpoint> <container>
      creates the container and prints a container SAS (read, add, create, write, list)
  azure_stage_check.py check <blob endpoint> <container> <blob> <master key> <expected file>
      downloads the blob, decrypts it with SnowflakeEncryptionUtil (unchanged) from its
      encryptiondata / matdesc metadata and the master key, and compares the gunzipped
      content with the expected file; prints a JSON summary

Any exception fails the run.
"""

import datetime
import gzip
import io
import json
import sys

from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas
from snowflake.connector.constants import EncryptionMetadata
from snowflake.connector.encryption_util import SnowflakeEncryptionUtil
from snowflake.connector.storage_client import SnowflakeFileEncryptionMaterial

ACCOUNT = "devstoreaccount1"
# Azurite's published development key.
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

mode, endpoint, container = sys.argv[1:4]
service = BlobServiceClient(account_url=f"{endpoint}/{ACCOUNT}", credential={"account_name": ACCOUNT, "account_key": KEY})

if mode == "sas":
    service.create_container(container)
    sas = generate_container_sas(
        ACCOUNT,
        container,
        account_key=KEY,
        permission=ContainerSasPermissions(read=True, add=True, create=True, write=True, list=True),
        expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1),
    )
    print(sas)
    sys.exit(0)

blob, master_key, expected_path = sys.argv[4:7]
client = service.get_blob_client(container, blob)
properties = client.get_blob_properties()
meta = properties.metadata
body = client.download_blob().readall()
data = json.loads(meta["encryptiondata"])
metadata = EncryptionMetadata(
    key=data["WrappedContentKey"]["EncryptedKey"],
    iv=data["ContentEncryptionIV"],
    matdesc=meta["matdesc"],
)
material = SnowflakeFileEncryptionMaterial(query_stage_master_key=master_key, query_id="", smk_id=0)
out = io.BytesIO()
SnowflakeEncryptionUtil.decrypt_stream(metadata, material, io.BytesIO(body), out)
with open(expected_path, "rb") as f:
    expected = f.read()
assert gzip.decompress(out.getvalue()) == expected, "the decrypted file differs"
print(json.dumps({"digest": meta["sfcdigest"], "matdesc": json.loads(meta["matdesc"]), "bytes": len(body)}))
