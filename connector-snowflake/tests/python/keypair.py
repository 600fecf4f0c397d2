"""Key-pair authentication as Snowflake's Python connector does it, for comparison with
ours: `make` prints a fresh RSA key (PKCS#8 PEM, plain and encrypted with PASSPHRASE),
its public key, the connector's fingerprint of it and a JWT the connector made for
ACCOUNT and USER; `verify` checks TOKEN's signature with PUBLIC_PEM (PyJWT, the
connector's own JWT library) and prints its claims."""

import json
import os
import sys

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from snowflake.connector.auth.keypair import AuthByKeyPair

if sys.argv[1] == "make":
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    auth = AuthByKeyPair(private_key=der)
    token = auth.prepare(account=os.environ["ACCOUNT"], user=os.environ["USER_NAME"])
    print(json.dumps({
        "pem": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode(),
        "encrypted_pem": key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(os.environ["PASSPHRASE"].encode()),
        ).decode(),
        "public_pem": key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
        "fingerprint": AuthByKeyPair.calculate_public_key_fingerprint(key),
        "claims": jwt.decode(token, options={"verify_signature": False}),
    }))
else:
    claims = jwt.decode(os.environ["TOKEN"], os.environ["PUBLIC_PEM"], algorithms=["RS256"])
    print(json.dumps(claims))
