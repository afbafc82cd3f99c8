"""Policy files (policies/*.yaml): a path found from the working directory or the project, read and validated
with every problem named by file and field."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from gateway.config import ConfigError

T = TypeVar("T")
PROJECT_ROOT = Path(__file__).resolve().parents[1]  # the checkout (policies/ is under it)


def resolve_policy_path(path: str | Path) -> Path:
    """Absolute: a relative path not found from the working directory is tried from the project."""
    file = Path(path)
    if not file.is_absolute() and not file.exists() and (PROJECT_ROOT / file).exists():
        file = PROJECT_ROOT / file
    return file.absolute()


def load_policy_file(path: str | Path, validate: Callable[[Any], T]) -> tuple[T, Path]:
    """Read a YAML file under policies/ and validate it; every problem is a ConfigError naming file and field."""
    file = resolve_policy_path(path)
    try:
        return validate(yaml.safe_load(file.read_text()) or {}), file
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{file}: {problems}") from None
