"""Settings base for every service: `AERPLANE_*` environment variables, `__` for nesting, CLI flags on top.

Each service defines one `BaseSettings` subclass of `ServiceSettings`; `load_settings` builds it from the
environment plus the CLI overrides (only the flags the user actually gave) and turns a validation failure into a
`SettingsError` whose message names the full key, e.g. ``learner.batch.prompts: must be divisible by world size``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "AERPLANE_"


class SettingsError(ValueError):
    """Invalid configuration; the message names every offending key."""


class ServiceSettings(BaseSettings):
    """Base class: `AERPLANE_` prefix, `__` nesting, values validated on assignment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="ignore",  # other services' AERPLANE_* variables share the environment
        validate_assignment=True,
        validate_default=True,
        use_attribute_docstrings=True,  # a field's docstring is its description: `--help` shows it (common.flags)
    )


S = TypeVar("S", bound=BaseSettings)


def format_validation_error(exc: ValidationError, section: str = "", labels: Mapping[str, str] | None = None) -> str:
    """One line per problem, each naming the full dotted key (and its flag, from `labels`: key -> flag)."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
        flag = (labels or {}).get(key)
        if section:
            key = f"{section}.{key}" if key else section
        if flag:
            key = f"{flag} ({key})"
        msg = err.get("msg", "invalid value")
        msg = msg.removeprefix("Value error, ")
        lines.append(f"{key or section or 'settings'}: {msg}")
    return "; ".join(lines)


def load_settings(
    cls: type[S],
    overrides: Mapping[str, Any] | None = None,
    *,
    section: str = "",
    labels: Mapping[str, str] | None = None,
) -> S:
    """Build `cls` from the environment with `overrides` (e.g. parsed CLI flags; None values are dropped) on top.
    `labels` (settings key -> flag) lets an error name the flag the user typed."""
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    try:
        return cls(**given)
    except ValidationError as exc:
        raise SettingsError(format_validation_error(exc, section, labels)) from None
