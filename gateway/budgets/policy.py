"""The budgets policy file (`policies/budgets.yaml`): limits in dollars and/or tokens per scope and window."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.config import ConfigError, ModelEntry
from gateway.policy_files import load_policy_file
from gateway.schema import validation_error
from gateway.schema.chat import GatewayMetadata

Scope = Literal["global", "daemon", "org", "user", "turn", "key"]
PICOS = Decimal(10**12)  # money is kept in pico-dollars: every per-token price in the tables is exact


def usd_text(picos: int) -> str:
    """Pico-dollars as a plain decimal dollar amount (no exponent, no trailing zeros): display only."""
    text = format(Decimal(picos) / PICOS, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    scope: Scope
    key: str | None = None  # one daemon / org / user / turn / key id; None: every one of them separately
    window: Literal["turn", "day", "month"]
    limit_usd: Decimal | None = Field(default=None, ge=0)
    limit_tokens: int | None = Field(default=None, ge=0)
    on_exceed: Literal["refuse", "shrink", "downgrade"] = "refuse"
    mid_stream: Literal["cut", "allow"] = "cut"
    min_output_tokens: int = Field(default=64, ge=1)  # shrink lowers max_tokens no further than this
    downgrade_to: tuple[str, ...] = ()  # downgrade: models to try when none of the route's candidates fits

    @model_validator(mode="after")
    def _sane(self) -> Budget:
        if self.limit_usd is None and self.limit_tokens is None:
            raise ValueError("a budget needs limit_usd and/or limit_tokens")
        if (self.scope == "turn") != (self.window == "turn"):
            raise ValueError("the `turn` window goes with the `turn` scope, and only with it")
        if self.scope == "global" and self.key is not None:
            raise ValueError("a global budget has no key")
        return self

    @property
    def limit_picos(self) -> int | None:
        return int(self.limit_usd * PICOS) if self.limit_usd is not None else None


class BudgetPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    budgets: dict[str, Budget] = {}

    def check_models(self, catalog: Mapping[str, ModelEntry], source: str) -> None:
        """A downgrade target must be a chat model of the catalog: a load-time error naming the field."""
        for name, budget in self.budgets.items():
            problem = downgrade_problem(budget, catalog)
            if problem is not None:
                raise ConfigError(f"{source}: budgets.{name}.{problem[0]}: {problem[1]}")


def downgrade_problem(budget: Budget, catalog: Mapping[str, ModelEntry]) -> tuple[str, str] | None:
    """(field, message) of the first downgrade target that is not a chat model of the catalog."""
    for i, model in enumerate(budget.downgrade_to):
        entry = catalog.get(model)
        if entry is None or entry.kind != "chat":
            return f"downgrade_to.{i}", f"{'unknown model' if entry is None else 'not a chat model:'} `{model}`"
    return None


def budget_rule(catalog: Mapping[str, ModelEntry]) -> Callable[[Mapping[str, Any]], Budget]:
    """How the admin API reads a budget body: validated like the file's, its downgrade targets checked (a
    ValidationError, or a GatewayError naming the field)."""

    def parse(body: Mapping[str, Any]) -> Budget:
        budget = Budget.model_validate(body)
        problem = downgrade_problem(budget, catalog)
        if problem is not None:
            raise validation_error(*problem)
        return budget

    return parse


@dataclass(frozen=True, slots=True)
class Account:
    """One budget for one key in one window: what the ledger keeps a balance for."""

    budget: str
    key: str
    window: str
    limit_picos: int | None
    limit_tokens: int | None
    id: str = field(init=False, compare=False)  # "budget|key|window", computed once (it keys every table)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", f"{self.budget}|{self.key}|{self.window}")

    @staticmethod
    def parts(account_id: str) -> tuple[str, str, str]:
        """(budget, key, window) of an account id (a key may hold `|` or `/`; budget names and windows do not)."""
        budget, rest = account_id.split("|", 1)
        key, window = rest.rsplit("|", 1)
        return budget, key, window


def accounts_for(policy: BudgetPolicy, meta: GatewayMetadata, now: datetime | None = None) -> list[Account]:
    """Every account a call with this metadata spends from (windows in UTC)."""
    now = now or datetime.now(tz=UTC)
    windows = {"day": now.strftime("%Y-%m-%d"), "month": now.strftime("%Y-%m"), "turn": "turn"}
    principal = meta.principal
    key_id = principal.key_id if principal is not None and not principal.is_open else None
    values: Mapping[str, str | None] = {
        "global": "*", "daemon": meta.daemon, "org": meta.org, "user": meta.user, "turn": meta.turn_id, "key": key_id,
    }  # fmt: skip
    out = []
    for name, b in policy.budgets.items():
        value = values[b.scope]
        if value is None or (b.key is not None and b.key != value):
            continue
        out.append(Account(name, in_org(b.scope, value, meta.org), windows[b.window], b.limit_picos, b.limit_tokens))
    return out


def in_org(scope: str, value: str, org: str | None) -> str:
    """A user's or a turn's account is its org's own (`acme/alice`): two orgs' users of one name never share one."""
    return f"{org}/{value}" if org is not None and scope in ("user", "turn") else value


def load_budgets(path: str | Path, catalog: Mapping[str, ModelEntry] | None = None) -> BudgetPolicy:
    policy, file = load_policy_file(path, BudgetPolicy.model_validate)
    if catalog is not None:
        policy.check_models(catalog, str(file))
    return policy
