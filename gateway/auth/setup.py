"""Choosing the auth mode (and refusing an unsafe one), and reading the pepper and bootstrap admin keys inside the
replica that uses them."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path

from gateway.config import AuthConfig, ConfigError, GatewayConfig
from gateway.secrets.refs import Credential

ADMIN_KEY_ENV = "LLM_GATEWAY_ADMIN_KEY"
AUTH_ENV = "LLM_GATEWAY_AUTH"
Resolve = Callable[[Credential | None], str | None]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_mode(config: GatewayConfig) -> str:
    """`keys` or `open`: LLM_GATEWAY_AUTH, else `auth.mode` (`auto`: open offline on loopback, keys otherwise).
    Open mode anywhere else is refused, saying why."""
    wanted = os.environ.get(AUTH_ENV) or config.auth.mode
    if wanted not in ("auto", "keys", "open"):
        raise ConfigError(f"{AUTH_ENV}={wanted}: one of auto, keys, open")
    safe = is_loopback(config.server.host) and config.is_offline
    if wanted == "auto":
        return "open" if safe else "keys"
    if wanted == "open" and not safe:
        why = [f"the server binds {config.server.host}, not a loopback address"] if not is_loopback(
            config.server.host) else []  # fmt: skip
        why += [] if config.is_offline else ["providers have real credentials (not offline)"]
        raise ConfigError("auth.mode open (any caller, identity from headers) is allowed only offline on a loopback "
                          f"address: {'; '.join(why)}. Use auth.mode: keys.")  # fmt: skip
    return wanted


def pepper(auth: AuthConfig, resolve: Resolve) -> bytes:
    """The HMAC key of stored key digests: `auth.pepper`, else the local file (made on first use, mode 0600). On a
    multi-node cluster set `auth.pepper` (e.g. from Secrets Manager): every replica must use the same one."""
    value = resolve(auth.pepper) if auth.pepper is not None else None
    if value:
        if len(value) < 16:
            raise ConfigError("auth.pepper: at least 16 characters")
        return value.encode()
    return _pepper_file(Path(auth.pepper_file).expanduser())


def _pepper_file(path: Path) -> bytes:
    """The pepper in `path`, made on first use. Written to a private temporary file, then linked into place: a
    replica starting at the same moment sees either no file or the whole pepper, never an empty one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".pepper-")  # mode 0600
        try:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(32))
            with contextlib.suppress(FileExistsError):  # another replica was first: its pepper stands
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    value = path.read_bytes().strip()
    if len(value) < 16:
        raise ConfigError(f"auth.pepper_file {path}: holds fewer than 16 characters; delete it to make a new pepper "
                          "(keys issued under the old one stop working)")  # fmt: skip
    return value


def admin_keys(auth: AuthConfig, resolve: Resolve) -> tuple[str, ...]:
    """Bootstrap admin keys: `auth.admin_keys` and LLM_GATEWAY_ADMIN_KEY (at least 32 characters each)."""
    values = [resolve(k) for k in auth.admin_keys]
    if os.environ.get(ADMIN_KEY_ENV):
        values.append(os.environ[ADMIN_KEY_ENV])
    keys = tuple(v for v in values if v)
    if any(len(k) < 32 for k in keys):
        raise ConfigError(f"auth.admin_keys / {ADMIN_KEY_ENV}: an admin key needs at least 32 characters "
                          "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")  # fmt: skip
    return keys
