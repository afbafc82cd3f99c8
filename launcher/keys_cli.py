"""`llm-gateway keys create|list|show|rotate|revoke`: the key admin API over HTTP, with LLM_GATEWAY_ADMIN_KEY."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

from gateway.auth.setup import ADMIN_KEY_ENV

DAEMONS = ("router", "executor", "evaluator", "working_memory")
SCOPES = ("chat", "embeddings", "admin")


def add_parser(sub: Any) -> None:
    keys = sub.add_parser("keys", help="issue, list, rotate and revoke gateway API keys (needs an admin key)")
    keys.add_argument("--url", help="the gateway's base URL (default: the running gateway's, else the config's)")
    keys.add_argument("--config", help="gateway YAML (for the default URL)")
    ops = keys.add_subparsers(dest="op", required=True)
    create = ops.add_parser("create", help="a new key; its secret is printed once")
    create.add_argument("--name", required=True)
    create.add_argument("--org", required=True)
    create.add_argument("--user", help="the end user it belongs to (optional)")
    create.add_argument("--daemon", action="append", choices=DAEMONS, dest="daemons", help="repeatable")
    create.add_argument("--model", action="append", dest="models", help="a catalog name or glob; repeatable")
    create.add_argument("--scope", action="append", choices=SCOPES, dest="scopes", help="repeatable")
    create.add_argument("--budget-tier")
    create.add_argument("--may-set-user", action="store_true", help="a service key that names end users")
    create.add_argument("--expires-in-s", type=float)
    ops.add_parser("list", help="every key (never a secret)")
    show = ops.add_parser("show", help="one key (never its secret)")
    show.add_argument("key_id")
    rotate = ops.add_parser("rotate", help="a new secret; the old one keeps working for --grace-s")
    rotate.add_argument("key_id")
    rotate.add_argument("--grace-s", type=float, default=3600.0)
    rotate.add_argument("--idempotency-key", help="a retry with the same value returns the same new secret")
    revoke = ops.add_parser("revoke", help="the key stops working on every replica within about a second")
    revoke.add_argument("key_id")


def _request(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None, dict[str, str]]:
    """(method, path, body, extra headers) of the admin API call for the parsed command."""
    if args.op == "create":
        fields = ("name", "org", "user", "daemons", "models", "scopes", "budget_tier", "may_set_user", "expires_in_s")
        body = {f: getattr(args, f) for f in fields if getattr(args, f) not in (None, False)}
        return "POST", "/v1/gateway/keys", body, {}
    if args.op == "list":
        return "GET", "/v1/gateway/keys", None, {}
    if args.op == "show":
        return "GET", f"/v1/gateway/keys/{args.key_id}", None, {}
    if args.op == "rotate":
        headers = {"idempotency-key": args.idempotency_key} if args.idempotency_key else {}
        return "POST", f"/v1/gateway/keys/{args.key_id}/rotate", {"grace_s": args.grace_s}, headers
    return "DELETE", f"/v1/gateway/keys/{args.key_id}", None, {}


def run(args: argparse.Namespace, base_url: str) -> int:
    admin_key = os.environ.get(ADMIN_KEY_ENV)
    if not admin_key:
        print(f"set {ADMIN_KEY_ENV} to an admin key (the one the gateway was started with, or a key with the "
              "`admin` scope)", file=sys.stderr)  # fmt: skip
        return 2
    method, path, body, headers = _request(args)
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base_url.rstrip("/") + path, data=data, method=method, headers={
        "authorization": f"Bearer {admin_key}", "content-type": "application/json", **headers})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            print(json.dumps(json.loads(answer.read()), indent=2))
            return 0
    except urllib.error.HTTPError as exc:
        print(f"{exc.code}: {exc.read().decode(errors='replace')}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cannot reach the gateway at {base_url} ({exc}); is it running (`llm-gateway up`)?", file=sys.stderr)
        return 1
