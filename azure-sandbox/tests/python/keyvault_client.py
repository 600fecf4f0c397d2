"""Microsoft's Key Vault secrets client (azure-keyvault-secrets), unchanged, against the
sandbox's fake vault: every call a MoodBridge store makes, and the answers the client
must accept. Prints one JSON object of findings; any assertion failure exits non-zero.

Environment: VAULT_URL, VAULT_CA (the vault's certificate, PEM file), VAULT_TOKEN.
"""

import json
import os
import time

from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.keyvault.secrets import SecretClient


class StaticToken:
    """A credential handing out one token, recording the scopes it is asked for."""

    def __init__(self, token):
        self.token = token
        self.scopes = []

    def get_token(self, *scopes, **kwargs):
        self.scopes.append(list(scopes))
        return AccessToken(self.token, int(time.time()) + 3600)


url = os.environ["VAULT_URL"]
ca = os.environ["VAULT_CA"]
credential = StaticToken(os.environ["VAULT_TOKEN"])
# The host is 127.0.0.1, not *.vault.azure.net: the challenge's resource cannot match it.
client = SecretClient(url, credential, verify_challenge_resource=False, connection_verify=ca)
out = {}

# Versions, content type, tags.
first = client.set_secret("case-db-password", "first", content_type="text/plain", tags={"env": "test"})
second = client.set_secret("case-db-password", "second")
assert first.properties.version != second.properties.version
assert len(first.properties.version) == 32
assert first.properties.content_type == "text/plain"
assert first.properties.tags == {"env": "test"}
assert first.properties.enabled is True
assert first.properties.created_on is not None
got = client.get_secret("case-db-password")
assert got.value == "second" and got.properties.version == second.properties.version
assert client.get_secret("case-db-password", first.properties.version).value == "first"
assert client.get_secret("CASE-DB-PASSWORD").value == "second", "names are case-insensitive"
versions = list(client.list_properties_of_secret_versions("case-db-password"))
assert sorted(v.version for v in versions) == sorted([first.properties.version, second.properties.version])
out["scopes"] = credential.scopes[0]

# Attributes: a disabled version cannot be read; tags and content type are updated.
updated = client.update_secret_properties(
    "case-db-password", first.properties.version, enabled=False, tags={"stage": "retired"}
)
assert updated.enabled is False and updated.tags == {"stage": "retired"}
try:
    client.get_secret("case-db-password", first.properties.version)
    raise AssertionError("a disabled version was read")
except HttpResponseError as e:
    assert e.status_code == 403, e.status_code
    out["disabled"] = e.error.code if e.error else None

# Not found.
try:
    client.get_secret("no-such-secret")
    raise AssertionError("a missing secret was read")
except ResourceNotFoundError as e:
    out["missing"] = e.error.code if e.error else None

# Paged lists (the fake pages by 25).
for i in range(30):
    client.set_secret(f"bulk-{i:02d}", f"value {i}")
names = sorted(p.name for p in client.list_properties_of_secrets())
assert names == sorted(["case-db-password"] + [f"bulk-{i:02d}" for i in range(30)]), names
out["listed"] = len(names)

# Soft delete, the name kept, recovery.
deleted = client.begin_delete_secret("case-db-password").result()
assert deleted.recovery_id.endswith("/deletedsecrets/case-db-password"), deleted.recovery_id
assert deleted.deleted_date is not None and deleted.scheduled_purge_date is not None
try:
    client.set_secret("case-db-password", "third")
    raise AssertionError("a deleted name was reused")
except ResourceExistsError as e:
    out["reuse"] = e.status_code
assert client.get_deleted_secret("case-db-password").name == "case-db-password"
assert "case-db-password" in [d.name for d in client.list_deleted_secrets()]
client.begin_recover_deleted_secret("case-db-password").result()
assert client.get_secret("case-db-password").value == "second"

# Delete and purge.
client.begin_delete_secret("bulk-00").result()
client.purge_deleted_secret("bulk-00")
try:
    client.get_deleted_secret("bulk-00")
    raise AssertionError("a purged secret is still deleted")
except ResourceNotFoundError:
    pass
client.set_secret("bulk-00", "again")

# A token the vault does not accept.
stranger = SecretClient(url, StaticToken("not-a-vault-token"), verify_challenge_resource=False, connection_verify=ca)
try:
    stranger.get_secret("bulk-01")
    raise AssertionError("a wrong token was accepted")
except ClientAuthenticationError as e:
    out["wrong_token"] = e.status_code

print(json.dumps(out))
