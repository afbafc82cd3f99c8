"""JWT / OIDC callers: signature by kid, allowed algorithms only, exp/nbf/iss/aud, org claim, JWKS refetch throttle."""

import asyncio
import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pydantic import ValidationError

from gateway.auth import jwt_verifier
from gateway.auth.jwt_verifier import JwtVerifier, looks_like_jwt
from gateway.config import JwtConfig
from gateway.schema import ErrorKind, GatewayError

ISS = "https://idp.example.test"
AUD = "llm-gateway"


@pytest.fixture(scope="module")
def rsa_a():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_b():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


def rsa_jwk(key, kid):
    return {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "use": "sig"}


def ec_jwk(key, kid):
    return {**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid}


def jwks_bytes(*jwks):
    return json.dumps({"keys": list(jwks)}).encode()


def claims(**overrides):
    now = int(time.time())
    base = {"iss": ISS, "aud": AUD, "sub": "svc-executor", "exp": now + 600, "iat": now, "org": "acme"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(key, kid, alg="RS256", **overrides):
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(claims(**overrides), key, algorithm=alg, headers=headers)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def jwks_file(tmp_path, rsa_a, ec_key):
    path = tmp_path / "jwks.json"
    path.write_bytes(jwks_bytes(rsa_jwk(rsa_a, "a"), ec_jwk(ec_key, "e")))
    return path


def file_verifier(path, clock, **config):
    cfg = JwtConfig(issuer=ISS, audience=AUD, jwks_file=str(path), algorithms=("RS256", "ES256"), **config)
    return JwtVerifier(cfg, clock=clock)


class CountingFetch:
    def __init__(self, body):
        self.body = body
        self.urls = []

    def __call__(self, url):
        self.urls.append(url)
        if isinstance(self.body, Exception):
            raise self.body
        return self.body


async def refused(verifier, token, reason):
    with pytest.raises(GatewayError) as info:
        await verifier.verify(token)
    error = info.value
    assert error.kind is ErrorKind.UNAUTHENTICATED and error.status_code == 401
    assert reason in error.message
    assert token not in error.message and token not in repr(error)
    return error


async def test_good_token_maps_claims(jwks_file, clock, rsa_a):
    verifier = file_verifier(jwks_file, clock)
    token = sign(
        rsa_a, "a", daemons=["executor", "evaluator", "no-such-daemon"], models=["gpt-4o*", "claude-*"],
        scope=["chat"], budget_tier="gold",
    )  # fmt: skip
    assert looks_like_jwt(token)
    identity = await verifier.verify(token)
    assert identity.subject == "svc-executor" and identity.user == "svc-executor"
    assert identity.issuer == ISS and identity.org == "acme"
    assert identity.daemons == ("executor", "evaluator")  # unknown daemon names are dropped
    assert identity.models == ("gpt-4o*", "claude-*")
    assert identity.scopes == ("chat",)
    assert identity.budget_tier == "gold"
    assert identity.expires_at == jwt.decode(token, options={"verify_signature": False})["exp"]
    assert identity.key_id.startswith("jwt:") and "svc-executor" not in identity.key_id
    other = await verifier.verify(sign(rsa_a, "a", org="other"))
    assert other.key_id == identity.key_id  # stable per issuer + subject
    assert (await verifier.verify(sign(rsa_a, "a", sub="someone-else"))).key_id != identity.key_id


async def test_defaults_when_claims_absent_and_custom_mapping(jwks_file, clock, rsa_a):
    verifier = file_verifier(jwks_file, clock, default_scopes=("chat", "admin"))
    identity = await verifier.verify(sign(rsa_a, "a"))
    assert identity.models == ("*",) and identity.daemons == () and identity.budget_tier is None
    assert identity.scopes == ("chat",)  # the default never grants admin
    mapped = file_verifier(jwks_file, clock, claims={"org": "tenant", "user": "email", "scopes": "perms"})
    identity = await mapped.verify(sign(rsa_a, "a", org=None, tenant="t1", email="u@x.test", perms="admin chat"))
    assert identity.org == "t1" and identity.user == "u@x.test" and identity.scopes == ("admin", "chat")


async def test_scopes_as_space_separated_string(jwks_file, clock, rsa_a):
    verifier = file_verifier(jwks_file, clock)
    identity = await verifier.verify(sign(rsa_a, "a", scope="openid email chat embeddings chat"))
    assert identity.scopes == ("chat", "embeddings")
    identity = await verifier.verify(sign(rsa_a, "a", scope="openid admin"))
    assert identity.scopes == ("admin",)
    await refused(verifier, sign(rsa_a, "a", scope=42), "malformed scope claim")


async def test_ec_key(jwks_file, clock, ec_key):
    identity = await file_verifier(jwks_file, clock).verify(sign(ec_key, "e", alg="ES256"))
    assert identity.org == "acme"


async def test_key_of_another_type_than_the_alg_is_refused(jwks_file, clock, ec_key, rsa_a):
    verifier = file_verifier(jwks_file, clock)
    await refused(verifier, sign(ec_key, "a", alg="ES256"), "signing key does not match algorithm")
    await refused(verifier, sign(rsa_a, "e", alg="RS256"), "signing key does not match algorithm")


async def test_expired_and_leeway(jwks_file, clock, rsa_a):
    verifier = file_verifier(jwks_file, clock, leeway_s=30)
    now = int(time.time())
    await refused(verifier, sign(rsa_a, "a", exp=now - 120), "token expired")
    assert (await verifier.verify(sign(rsa_a, "a", exp=now - 5))).org == "acme"  # within the leeway


async def test_not_yet_valid(jwks_file, clock, rsa_a):
    await refused(file_verifier(jwks_file, clock), sign(rsa_a, "a", nbf=int(time.time()) + 600), "token not yet valid")


async def test_wrong_audience_and_issuer(jwks_file, clock, rsa_a):
    verifier = file_verifier(jwks_file, clock)
    await refused(verifier, sign(rsa_a, "a", aud="someone-else"), "wrong audience")
    await refused(verifier, sign(rsa_a, "a", iss="https://evil.example.test"), "wrong issuer")
    assert (await verifier.verify(sign(rsa_a, "a", aud=["other", AUD]))).org == "acme"


@pytest.mark.parametrize("claim", ["exp", "iss", "aud", "sub"])
async def test_required_claims(jwks_file, clock, rsa_a, claim):
    await refused(file_verifier(jwks_file, clock), sign(rsa_a, "a", **{claim: None}), f"missing {claim} claim")


async def test_missing_org(jwks_file, clock, rsa_a):
    verifier = file_verifier(jwks_file, clock)
    await refused(verifier, sign(rsa_a, "a", org=None), "missing org claim")
    await refused(verifier, sign(rsa_a, "a", org=""), "missing org claim")
    await refused(verifier, sign(rsa_a, "a", org=["acme"]), "malformed org claim")


async def test_bad_signature(jwks_file, clock, rsa_a, rsa_b):
    verifier = file_verifier(jwks_file, clock)
    await refused(verifier, sign(rsa_b, "a"), "bad signature")
    header, _, signature = sign(rsa_a, "a").split(".")
    forged = base64.urlsafe_b64encode(json.dumps(claims(org="victim")).encode()).rstrip(b"=").decode()
    await refused(verifier, f"{header}.{forged}.{signature}", "bad signature")


async def test_malformed(jwks_file, clock):
    verifier = file_verifier(jwks_file, clock)
    await refused(verifier, "not-a-jwt", "malformed token")
    await refused(verifier, "eyJhbGciOiJSUzI1NiJ9.!!!.x", "malformed token")
    await refused(verifier, "a" * 20000, "malformed token")


async def test_alg_none_is_refused_before_any_key_lookup(jwks_file, clock):
    verifier = file_verifier(jwks_file, clock)
    token = jwt.encode(claims(), None, algorithm="none", headers={"kid": "a"})
    assert looks_like_jwt(token)
    await refused(verifier, token, "algorithm not allowed")
    assert verifier.jwks_reads == 0


async def test_hs256_signed_with_the_rsa_public_pem_is_refused(jwks_file, clock, rsa_a):
    verifier = file_verifier(jwks_file, clock)
    pem = rsa_a.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "a"}).encode())
    signing_input = f"{header}.{b64(json.dumps(claims()).encode())}"
    token = f"{signing_input}.{b64(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())}"
    await refused(verifier, token, "algorithm not allowed")
    assert verifier.jwks_reads == 0
    with pytest.raises(ValidationError):
        JwtConfig(issuer=ISS, audience=AUD, jwks_file="x", algorithms=("HS256",))


async def test_symmetric_keys_in_the_jwks_are_ignored(tmp_path, clock, rsa_a):
    path = tmp_path / "jwks.json"
    oct_key = {"kty": "oct", "kid": "sym", "k": base64.urlsafe_b64encode(b"s" * 32).rstrip(b"=").decode()}
    path.write_bytes(jwks_bytes(oct_key, rsa_jwk(rsa_a, "a")))
    await refused(file_verifier(path, clock), sign(rsa_a, "sym"), "unknown signing key")


async def test_token_without_kid_uses_the_only_key(tmp_path, clock, rsa_a, jwks_file):
    path = tmp_path / "one.json"
    path.write_bytes(jwks_bytes(rsa_jwk(rsa_a, "a")))
    assert (await file_verifier(path, clock).verify(sign(rsa_a, None))).org == "acme"
    await refused(file_verifier(jwks_file, clock), sign(rsa_a, None), "unknown signing key")  # two keys: ambiguous


async def test_unknown_kid_refetch_picks_up_a_rotated_jwks(jwks_file, clock, rsa_a, rsa_b, ec_key):
    verifier = file_verifier(jwks_file, clock)
    await verifier.verify(sign(rsa_a, "a"))
    assert verifier.jwks_reads == 1
    jwks_file.write_bytes(jwks_bytes(rsa_jwk(rsa_a, "a"), ec_jwk(ec_key, "e"), rsa_jwk(rsa_b, "b")))
    identity = await verifier.verify(sign(rsa_b, "b"))
    assert identity.org == "acme" and verifier.jwks_reads == 2
    await verifier.verify(sign(rsa_a, "a", sub="x"))  # old key still there, no further read
    assert verifier.jwks_reads == 2


async def test_unknown_kid_refetches_once_per_window_and_concurrent_callers_share_it(clock, rsa_a, rsa_b):
    fetch = CountingFetch(jwks_bytes(rsa_jwk(rsa_a, "a")))
    config = JwtConfig(issuer=ISS, audience=AUD, jwks_url="https://idp.example.test/jwks")
    verifier = JwtVerifier(config, fetch, clock=clock)
    await verifier.verify(sign(rsa_a, "a"))
    assert len(fetch.urls) == 1
    await refused(verifier, sign(rsa_b, "zz"), "unknown signing key")
    assert len(fetch.urls) == 2  # one refetch
    clock.now += 5
    await refused(verifier, sign(rsa_b, "zz", sub="2"), "unknown signing key")
    assert len(fetch.urls) == 2  # throttled
    clock.now += 10
    results = await asyncio.gather(*(verifier.verify(sign(rsa_b, "zz", sub=str(i))) for i in range(5)),
                                   return_exceptions=True)  # fmt: skip
    assert all(isinstance(r, GatewayError) and r.message == "unknown signing key" for r in results)
    assert len(fetch.urls) == 3  # five concurrent verifications, one shared refetch


async def test_injected_fetch_is_used_for_jwks_url(clock, ec_key):
    fetch = CountingFetch(jwks_bytes(ec_jwk(ec_key, "e")))
    config = JwtConfig(issuer=ISS, audience=AUD, jwks_url="https://idp.example.test/jwks", algorithms=("ES256",))
    verifier = JwtVerifier(config, fetch, clock=clock)
    tokens = [sign(ec_key, "e", alg="ES256", sub=str(i)) for i in range(3)]
    await asyncio.gather(*(verifier.verify(t) for t in tokens))
    assert fetch.urls == ["https://idp.example.test/jwks"]  # concurrent first callers share one read


async def test_unreadable_jwks_refuses_and_backs_off(clock, rsa_a):
    fetch = CountingFetch(OSError("connection refused"))
    config = JwtConfig(issuer=ISS, audience=AUD, jwks_url="https://idp.example.test/jwks")
    verifier = JwtVerifier(config, fetch, clock=clock)
    await refused(verifier, sign(rsa_a, "a"), "signing keys unavailable")
    await refused(verifier, sign(rsa_a, "a"), "signing keys unavailable")
    assert len(fetch.urls) == 1  # no second read within the back-off
    fetch.body = jwks_bytes(rsa_jwk(rsa_a, "a"))
    clock.now += jwt_verifier.FAILED_RETRY_S
    assert (await verifier.verify(sign(rsa_a, "a"))).org == "acme"


async def test_stale_jwks_is_reread_in_the_background_and_kept_on_failure(clock, rsa_a, rsa_b):
    fetch = CountingFetch(jwks_bytes(rsa_jwk(rsa_a, "a")))
    config = JwtConfig(issuer=ISS, audience=AUD, jwks_url="https://idp.example.test/jwks", jwks_cache_s=60)
    verifier = JwtVerifier(config, fetch, clock=clock)
    await verifier.verify(sign(rsa_a, "a"))
    clock.now += 61
    fetch.body = OSError("down")
    assert (await verifier.verify(sign(rsa_a, "a", sub="2"))).org == "acme"  # served from the cached keys
    assert verifier._refresh is not None
    await verifier._refresh
    assert len(fetch.urls) == 2
    assert (await verifier.verify(sign(rsa_a, "a", sub="3"))).org == "acme"  # a failed read keeps the old keys
    fetch.body = jwks_bytes(rsa_jwk(rsa_b, "b"))
    clock.now += jwt_verifier.FAILED_RETRY_S
    await verifier.verify(sign(rsa_a, "a", sub="4"))
    await verifier._refresh
    assert (await verifier.verify(sign(rsa_b, "b"))).org == "acme"
    await refused(verifier, sign(rsa_a, "a", sub="5"), "unknown signing key")  # rotated out


async def test_verified_tokens_are_cached_briefly_and_never_past_exp(jwks_file, clock, rsa_a, monkeypatch):
    verifier = file_verifier(jwks_file, clock)
    calls = []
    decode = jwt.decode
    monkeypatch.setattr(jwt_verifier.jwt, "decode", lambda *a, **k: calls.append(1) or decode(*a, **k))
    token = sign(rsa_a, "a")
    first = await verifier.verify(token)
    assert await verifier.verify(token) is first and len(calls) == 1
    clock.now += jwt_verifier.CACHE_TTL_S
    await verifier.verify(token)
    assert len(calls) == 2
    within_leeway = sign(rsa_a, "a", exp=int(time.time()) - 5)
    await verifier.verify(within_leeway)
    await verifier.verify(within_leeway)
    assert len(calls) == 4  # a token already past exp is never cached


def test_looks_like_jwt(rsa_a):
    assert looks_like_jwt(sign(rsa_a, "a"))
    assert not looks_like_jwt("gwk_abcdefgh_" + "x" * 43)
    assert not looks_like_jwt("a.b")
    assert not looks_like_jwt("YWJj.YWJj.YWJj")  # header is not JSON
    assert not looks_like_jwt("e30.e30.sig")  # header JSON without alg
    assert not looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.a+b.c")
