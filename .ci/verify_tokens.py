"""Checks authlog's access tokens with code nobody on the project wrote: PyJWT's PyJWKClient,
which fetches /.well-known/jwks.json and picks the key a token's `kid` names, as a service
checking authlog's tokens would.

    verify_tokens.py ISSUER_URL VERIFIER_URL AUTHLOG_BIN

Tokens are issued by ISSUER_URL, the JWKS is read from VERIFIER_URL (another instance on the
same database, or the same one). AUTHLOG_BIN is run as `keys rotate` and `keys retire` with the
environment this script was given (the same log as the servers). The servers must have been
started with a short AUTHLOG_JWKS_MAX_AGE_SECONDS, the lead time a new key waits before signing.

1. A token verifies with the key its kid names, with the algorithm pinned to EdDSA.
2. `authlog keys rotate`: the new key is in the JWKS at once; once the lead time has passed, new
   tokens carry its kid; tokens signed by the old key still verify.
3. `authlog keys retire OLD`: the old kid is gone from the JWKS, PyJWKClient cannot find a key
   for the old token, and authlog refuses it (401).
"""

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import jwt
from jwt import PyJWKClient, PyJWKClientError

ISSUER, VERIFIER, BIN = sys.argv[1], sys.argv[2], sys.argv[3]
PASSWORD = "verify-tokens-password-1"


def post(base, path, body):
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read() or b"null")


def profile_status(base, token):
    request = urllib.request.Request(base + "/profile", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def jwks(base):
    with urllib.request.urlopen(base + "/.well-known/jwks.json", timeout=10) as response:
        cache_control = response.headers["Cache-Control"]
        return [key["kid"] for key in json.loads(response.read())["keys"]], cache_control


def login(email):
    status, body = post(ISSUER, "/login", {"email": email, "password": PASSWORD})
    assert status == 200, (status, body)
    return body["access_token"]


def verify(token, client):
    """PyJWT's own checks: signature with the JWKS key the kid names, EdDSA only, exp, iss, aud."""
    key = client.get_signing_key_from_jwt(token)
    return jwt.decode(
        token,
        key.key,
        algorithms=["EdDSA"],
        audience="authlog",
        issuer="authlog",
        options={"require": ["exp", "iat", "sub", "iss", "aud"]},
    )


def authlog(*args):
    done = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (args, done.returncode, done.stdout, done.stderr)
    return done.stdout


def readme_example(base):
    """The README's Python example ("Verifying tokens in your own service"), exactly as written
    there but for the service's address: it must work as printed."""
    readme = open("README.md", encoding="utf-8").read()
    section = readme.split("## Verifying tokens in your own service", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert "http://127.0.0.1:8000" in code, code
    namespace = {}
    exec(code.replace("http://127.0.0.1:8000", base), namespace)
    return namespace["user_of"]


def main():
    email = f"verify-{uuid.uuid4().hex[:12]}@example.com"
    status, body = post(ISSUER, "/signup", {"email": email, "password": PASSWORD})
    assert status == 201, (status, body)

    old_token = login(email)
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    kids, cache_control = jwks(VERIFIER)
    assert old_kid in kids, (old_kid, kids)
    assert cache_control.startswith("public, max-age="), cache_control
    client = PyJWKClient(VERIFIER + "/.well-known/jwks.json", cache_keys=False, lifespan=1)
    claims = verify(old_token, client)
    assert claims["sub"] == body["id"] and claims["email"] == email, claims
    print(f"verify-tokens: PyJWT verified a token signed by {old_kid}")
    user_of = readme_example(VERIFIER)
    assert user_of(old_token)["sub"] == body["id"]
    print("verify-tokens: the README's example verifies it too")

    # A token whose algorithm is not the key's: PyJWT refuses it too.
    try:
        jwt.decode(old_token, client.get_signing_key_from_jwt(old_token).key, algorithms=["HS256"])
        raise AssertionError("an EdDSA token checked as HS256")
    except jwt.InvalidTokenError:
        pass

    print(authlog("keys", "rotate").strip())
    # The server applies the command's append within a second (at once on PostgreSQL).
    deadline = time.monotonic() + 5
    while len(kids := jwks(VERIFIER)[0]) < 2:
        assert time.monotonic() < deadline, f"the new key is not published after 5 s: {kids}"
        time.sleep(0.1)
    assert len(kids) == 2 and kids[0] == old_kid, kids
    new_kid = kids[1]
    deadline = time.monotonic() + 30
    while True:
        new_token = login(email)
        if jwt.get_unverified_header(new_token)["kid"] == new_kid:
            break
        assert jwt.get_unverified_header(new_token)["kid"] == old_kid
        assert time.monotonic() < deadline, "the new key did not start signing within 30 s"
        time.sleep(0.5)
    verify(new_token, client)
    verify(old_token, client)
    # A fresh copy of the README's client: the first one cached the key set as it was (PyJWT
    # refetches it for an unknown kid at most every 30 s). Here the lead time is one second; a
    # real one (an hour) is longer than PyJWT's caching, so its clients have the key in time.
    assert readme_example(VERIFIER)(new_token)["sub"] == body["id"]
    assert readme_example(VERIFIER)(old_token)["sub"] == body["id"]
    assert profile_status(VERIFIER, old_token) == 200
    assert profile_status(VERIFIER, new_token) == 200
    print(f"verify-tokens: after rotation, new tokens carry {new_kid}; both verify")

    print(authlog("keys", "retire", old_kid).strip())
    deadline = time.monotonic() + 10
    while old_kid in jwks(VERIFIER)[0]:
        assert time.monotonic() < deadline, "the retired key is still published after 10 s"
        time.sleep(0.2)
    assert jwks(VERIFIER)[0] == [new_kid]
    try:
        verify(old_token, PyJWKClient(VERIFIER + "/.well-known/jwks.json", cache_keys=False))
        raise AssertionError("a token signed by a retired key verified")
    except PyJWKClientError as error:
        print(f"verify-tokens: PyJWT finds no key for the retired kid ({error})")
    assert profile_status(VERIFIER, old_token) == 401
    assert profile_status(ISSUER, old_token) == 401
    verify(new_token, client)
    print("verify-tokens: after retirement the old kid is gone, its tokens refused; new ones verify")


if __name__ == "__main__":
    main()
