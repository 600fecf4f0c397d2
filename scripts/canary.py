#!/usr/bin/env python3
"""Secret canary: search logs and files for planted secrets in every form they could leak in.

usage: canary.py --secret S [--secret S ...] [--pattern REGEX ...] PATH [PATH ...]

Every file under each PATH (binary files included) is searched for each secret raw,
percent-encoded (upper- and lower-case hex, spaces as %20 or +) and base64-encoded
(standard and URL-safe, with and without padding, at each of the three byte alignments a
secret can have inside a longer encoded text), and for each regex pattern (secrets whose
value is random, matched by their fixed shape) in the raw and the percent-decoded text.
Exits 1 naming file and offset of every hit (the hit itself masked), 0 when clean.
"""

import argparse
import base64
import os
import re
import sys
import urllib.parse


def forms(secret: str) -> set[bytes]:
    raw = secret.encode()
    out = {raw}
    for quoted in (
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret, safe=""),
        urllib.parse.quote(secret, safe="-._~"),
    ):
        out.add(quoted.encode())
        out.add(re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quoted).encode())
    # Inside a longer base64 text a secret starts at one of three byte offsets; the
    # characters that depend on its bytes alone are the same wherever it sits.
    for pad in (b"", b"\0", b"\0\0"):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(pad + raw)
            skip = {0: 0, 1: 2, 2: 3}[len(pad)]
            inner = text[skip:].rstrip(b"=")
            # The last character may mix in the bytes after the secret.
            inner = inner[: len(inner) - 1] if len(pad + raw) % 3 else inner
            if len(inner) >= 8:
                out.add(inner)
    return {f for f in out if len(f) >= 6}


def files(paths):
    for path in paths:
        if os.path.isfile(path):
            yield path
        for root, _, names in os.walk(path):
            for name in names:
                yield os.path.join(root, name)


def self_test(secrets: list[str]) -> int:
    """Plant each secret in each leaked form in files of a temporary directory; every
    file must be reported (a scan that cannot fail proves nothing)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        planted = 0
        for i, secret in enumerate(secrets):
            raw = secret.encode()
            leaks = [
                b"before " + raw + b" after",
                b"q=" + re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(),
                               urllib.parse.quote(secret, safe="")).encode(),
                b"Basic " + base64.b64encode(b"client-id:" + raw + b"!"),
                b"x" + base64.urlsafe_b64encode(b"\0\0" + raw).rstrip(b"="),
            ]
            for j, leak in enumerate(leaks):
                with open(os.path.join(tmp, f"{i}-{j}.log"), "wb") as f:
                    f.write(leak)
                planted += 1
        with open(os.path.join(tmp, "clean.log"), "wb") as f:
            f.write(b"nothing to see")
        argv = [sys.executable, __file__]
        for secret in secrets:
            argv += ["--secret", secret]
        out = subprocess.run(argv + [tmp], capture_output=True, text=True).stdout
        found = {line.split()[1] for line in out.splitlines() if line.startswith("LEAK:")}
        missed = planted - len(found)
        clean = not any("clean.log" in f for f in found)
        print(f"canary self-test: {len(found)} of {planted} planted leaks found, clean file {'clean' if clean else 'FLAGGED'}")
        return 0 if missed == 0 and clean else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secret", action="append", default=[])
    parser.add_argument("--pattern", action="append", default=[])
    parser.add_argument("--self-test", action="store_true",
                        help="check that planted leaks of the secrets are found, then scan")
    parser.add_argument("paths", nargs="+")
    args = parser.parse_args()
    if args.self_test and self_test(args.secret):
        return 1
    needles = [(s, f) for s in args.secret for f in forms(s)]
    patterns = [re.compile(p.encode()) for p in args.pattern]
    hits, scanned, size = 0, 0, 0
    for path in files(args.paths):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        scanned += 1
        size += len(data)
        decoded = urllib.parse.unquote_to_bytes(data) if b"%" in data else data
        for secret, form in needles:
            at = data.find(form)
            if at >= 0:
                hits += 1
                print(f"LEAK: {path} offset {at}: a form of secret {secret[:4]}… ({len(form)} bytes)")
        for pattern in patterns:
            for text, how in ((data, "raw"), (decoded, "percent-decoded")):
                m = pattern.search(text)
                if m:
                    hits += 1
                    print(f"LEAK: {path} offset {m.start()} ({how}): matches {pattern.pattern.decode()!r}")
                    break
    print(f"canary: {scanned} files, {size / 1e6:.1f} MB, {len(args.secret)} secrets in {len(needles)} forms, {len(patterns)} patterns: {hits} leaks")
    return 1 if hits else 0


if __name__ == "__main__":
    sys.exit(main())
