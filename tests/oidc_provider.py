"""A small OpenID Connect provider for the single sign-on tests, served on a free port.

Written here after OpenID Connect Core 1.0 (authorization code flow), Discovery 1.0,
RFC 7517 (JWKS), RFC 7636 (PKCE, S256) and RP-Initiated Logout, and nothing more: a
discovery document, the RSA public key as a JWKS, an authorization endpoint that signs
the test's `person` in and redirects back with a one-time code, a token endpoint that
checks the client, the code, its redirect URI and the PKCE verifier and issues an RS256
ID token with the nonce, a user info endpoint (with the groups claim) and an end-session
endpoint. The tokens are signed by PyJWT with a key made by `cryptography`; the relying
party under test (mozilla-django-oidc) runs unchanged against it over HTTP.

`tamper` makes the next ID tokens wrong in one way: "signature" (signed by another key
under the same key id), "nonce", "audience", "issuer", "expired".
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

CLIENT_ID = "attest-tests"
CLIENT_SECRET = "s3cret-" + "x" * 24
KEY_ID = "test-key-1"
# How often serve_forever looks whether shutdown() was called: its default, half a
# second, was what each test's teardown waited for.
POLL = 0.05


def _b64(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@functools.cache
def signing_keys() -> tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]:
    """The provider's key and another one (a token signed by the wrong key), made once per
    test process: an RSA key takes a tenth of a second to make, and a key is never changed."""
    return (
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


class Provider:
    """The provider's state: who is signed in at it, the codes and tokens it handed out."""

    def __init__(self) -> None:
        self.key, self.other_key = signing_keys()
        self.person: dict[str, Any] = {}
        self.tamper: str | None = None
        self.codes: dict[str, dict[str, Any]] = {}
        self.access_tokens: dict[str, dict[str, Any]] = {}
        self.requests: list[str] = []  # paths asked for, in order
        self.logged_out: list[dict[str, list[str]]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.issuer = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": POLL}, daemon=True
        )

    def __enter__(self) -> Provider:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def sign_in(self, sub: str, username: str, groups: list[str], email: str = "") -> None:
        """The person who signs in at the provider when Attest sends them there next."""
        self.person = {
            "sub": sub,
            "preferred_username": username,
            "email": email or f"{username}@bank.example",
            "groups": groups,
        }

    # --- documents ---------------------------------------------------------------

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "userinfo_endpoint": f"{self.issuer}/userinfo",
            "jwks_uri": f"{self.issuer}/jwks",
            "end_session_endpoint": f"{self.issuer}/logout",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post"],
        }

    def jwks(self) -> dict[str, Any]:
        numbers = self.key.public_key().public_numbers()
        key = {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": KEY_ID}
        return {"keys": [key | {"n": _b64(numbers.n), "e": _b64(numbers.e)}]}

    def id_token(self, claims: dict[str, Any], nonce: str) -> str:
        now = int(time.time())
        payload = {
            "iss": self.issuer,
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            "nonce": nonce,
            **{k: claims[k] for k in ("sub", "preferred_username", "email")},
        }
        key = self.key
        if self.tamper == "signature":
            key = self.other_key
        elif self.tamper == "nonce":
            payload["nonce"] = "not-" + nonce
        elif self.tamper == "audience":
            payload["aud"] = "another-client"
        elif self.tamper == "issuer":
            payload["iss"] = "https://idp.elsewhere.example"
        elif self.tamper == "expired":
            payload |= {"iat": now - 7200, "exp": now - 3600}
        return jwt.encode(payload, key, algorithm="RS256", headers={"kid": KEY_ID})

    # --- endpoints ---------------------------------------------------------------

    def authorize(self, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if query.get("client_id") != CLIENT_ID or query.get("response_type") != "code":
            return 400, {}, b"unknown client or response type"
        if "openid" not in query.get("scope", "").split() or not query.get("nonce"):
            return 400, {}, b"openid scope and nonce required"
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            return 400, {}, b"PKCE (S256) required"
        code = secrets.token_urlsafe(24)
        self.codes[code] = {
            "claims": dict(self.person),
            "nonce": query["nonce"],
            "redirect_uri": query["redirect_uri"],
            "challenge": query["code_challenge"],
        }
        back = f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query['state']})}"
        return 302, {"Location": back}, b""

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if (form.get("client_id"), form.get("client_secret")) != (CLIENT_ID, CLIENT_SECRET):
            return _json(401, {"error": "invalid_client"})
        grant = self.codes.pop(form.get("code", ""), None)  # a code is good once
        if grant is None or form.get("grant_type") != "authorization_code":
            return _json(400, {"error": "invalid_grant"})
        if form.get("redirect_uri") != grant["redirect_uri"]:
            return _json(400, {"error": "invalid_grant", "error_description": "redirect_uri"})
        digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != grant["challenge"]:
            return _json(400, {"error": "invalid_grant", "error_description": "PKCE"})
        access_token = secrets.token_urlsafe(24)
        self.access_tokens[access_token] = grant["claims"]
        return _json(
            200,
            {
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": self.id_token(grant["claims"], grant["nonce"]),
            },
        )

    def userinfo(self, authorization: str) -> tuple[int, dict[str, str], bytes]:
        claims = self.access_tokens.get(authorization.removeprefix("Bearer "))
        if claims is None:
            return _json(401, {"error": "invalid_token"})
        return _json(200, claims)


def _json(status: int, body: Any) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()


def _handler(provider: Provider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            provider.requests.append(url.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path == "/.well-known/openid-configuration":
                self._send(*_json(200, provider.discovery()))
            elif url.path == "/jwks":
                self._send(*_json(200, provider.jwks()))
            elif url.path == "/authorize":
                self._send(*provider.authorize(query))
            elif url.path == "/userinfo":
                self._send(*provider.userinfo(self.headers.get("Authorization", "")))
            elif url.path == "/logout":
                provider.logged_out.append(parse_qs(url.query))
                self._send(200, {"Content-Type": "text/plain"}, b"signed out")
            else:
                self._send(404, {}, b"")

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            provider.requests.append(url.path)
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            self._send(*(provider.token(form) if url.path == "/token" else (404, {}, b"")))

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet

    return Handler
