"""A local moto server for AWS tests (every moto backend: DynamoDB, Secrets Manager, ...): real HTTP on loopback,
fake credentials, one request at a time."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

REGION = "us-east-1"
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}
AWS_OVERRIDES = (
    "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_ENDPOINT_URL_SECRETS_MANAGER",
)  # fmt: skip


def one_at_a_time(app: Callable[..., Iterable[bytes]]) -> Callable[..., list[bytes]]:
    """The WSGI app, serving one request at a time (each response read out before the next request starts)."""
    lock = threading.Lock()

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with lock:
            return list(app(environ, start_response))

    return serve


@contextmanager
def moto_server(scratch: Path) -> Iterator[str]:
    """The server's base URL, with fake credentials in the environment (and no AWS config or credentials file, no
    profile or endpoint override, applying) while it runs. `scratch`: an empty directory of the caller's."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in FAKE_AWS.items():
            env.setenv(name, value)
        for name in AWS_OVERRIDES:
            env.delenv(name, raising=False)
        nowhere = str(scratch / "none")
        env.setenv("AWS_CONFIG_FILE", nowhere)
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", nowhere)
        # moto's ThreadedMotoServer, but one request at a time: moto's DynamoDB is not thread-safe (a cancelled
        # transaction restores a copy of the table taken before it began, undoing what concurrent requests wrote;
        # a condition check and the write it guards are not atomic). Served in turn, each request is isolated.
        app = one_at_a_time(DomainDispatcherApplication(create_backend_app))
        server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_port}"
        finally:
            server.shutdown()
            thread.join()
