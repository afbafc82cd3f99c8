"""What the Router actor holds: the routing policy (reloadable, an invalid reload keeps the old one) and the
latest view of every provider, published as versioned RoutingSnapshots."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from gateway.config import ConfigError, ModelEntry
from gateway.control.snapshot import ProviderView, RoutingSnapshot
from gateway.routing.policy import RoutingPolicy, load_policy

log = logging.getLogger("gateway.router")


class RouterState:
    """The policy in force (with its version and the last reload error), the latest view of every provider and
    the snapshot built from them; the snapshot is rebuilt, with a new version, only after something changed."""

    def __init__(self, policy: RoutingPolicy | None, policy_path: str | None, catalog: Mapping[str, ModelEntry],
                 version: int = 1) -> None:  # fmt: skip
        self._policy = policy
        self._path = Path(policy_path) if policy_path else None
        self._catalog = catalog
        self._mtime = self._stat()
        self._providers: dict[str, ProviderView] = {}
        self._policy_version = 1
        self._error: str | None = None
        self._version = version  # a restarted Router starts from its start time (µs), above its old versions
        self._snapshot: RoutingSnapshot | None = None

    @property
    def policy(self) -> RoutingPolicy | None:
        return self._policy

    def _stat(self) -> float | None:
        try:
            return self._path.stat().st_mtime if self._path else None
        except OSError:
            return None

    def reload(self) -> tuple[bool, str]:
        """Re-read the policy file. An invalid file is rejected with the reason, and the current policy stays."""
        if self._path is None:
            return False, "no routing policy file is configured"
        self._mtime = self._stat()
        try:
            policy = load_policy(self._path, self._catalog)
        except ConfigError as exc:
            self._error = str(exc)
            self._snapshot = None
            log.error("policy reload rejected, keeping policy v%d: %s", self._policy_version, exc)
            return False, self._error
        self._error = None
        if policy != self._policy:
            self._policy, self._policy_version = policy, self._policy_version + 1
        self._snapshot = None
        return True, f"policy v{self._policy_version} in force"

    def reload_if_changed(self) -> None:
        """Called on every tick: a policy file edited in place is picked up without a command."""
        if self._path is not None and self._stat() != self._mtime:
            self.reload()

    def absorb(self, view: ProviderView) -> None:
        if self._providers.get(view.provider) != view:
            self._providers[view.provider] = view
            self._snapshot = None

    def snapshot(self) -> RoutingSnapshot:
        """The current snapshot; its version moves only when something in it changed."""
        if self._snapshot is None:
            self._version += 1
            self._snapshot = RoutingSnapshot(
                self._version, self._policy, self._policy_version, dict(self._providers), self._error
            )
        return self._snapshot

    def status(self) -> dict[str, object]:
        return {"policy_version": self._policy_version, "policy_path": str(self._path) if self._path else None,
                "last_reload_error": self._error, "snapshot_version": self.snapshot().version}  # fmt: skip
