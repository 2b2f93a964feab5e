"""Settings base for every service: `AERPLANE_*` environment variables, `__` for nesting, CLI flags on top.

Each service defines one `BaseSettings` subclass of `ServiceSettings`; `load_settings` builds it from the
environment plus the CLI overrides (only the flags the user actually gave) and turns a validation failure into a
`SettingsError` whose message names the full key, e.g. ``learner.batch.prompts: must be divisible by world size``.

One naming scheme for the environment, documented here once:

- shared by every process, one name everywhere: `AERPLANE_REDIS_URL`, `AERPLANE_RUN_ID`, `AERPLANE_LOG_LEVEL`,
  `AERPLANE_LOG_STREAM`, `AERPLANE_CACHE_DIR` (the fields of `ServiceSettings` and `RedisSettings` below; the
  Redis password is read by `common.redis_client` from `AERPLANE_REDIS_PASSWORD[_FILE]`);
- shared by two services: `AERPLANE_LEARNER_TOKEN` (the learner sends it, the coefficient service checks it);
- a service's own option: `AERPLANE_<SERVICE>_<FIELD>` (`AERPLANE_REWARD_WORKERS`, `AERPLANE_UP_STEPS`), with `__`
  into a group of options (`AERPLANE_LEARNER_OPTIM__LR`); the learner's names before its prefix still work
  (`learner.settings`);
- `aerplane <service> --help` prints every option with its variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "AERPLANE_"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
# What a run id is, wherever one is configured: it names Redis keys (`aerplane:{run_id}:...`) and folders.
RunId = Annotated[str, Field(min_length=1, max_length=128, pattern=RUN_ID_PATTERN)]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def _shared(name: str) -> str:
    """The variable every process reads for `name`, with no service prefix (the field's own name still works for
    overrides: `validate_by_name`; an alias choice with the bare name would also read e.g. `REDIS_URL`)."""
    return f"{ENV_PREFIX}{name.upper()}"


class SettingsError(ValueError):
    """Invalid configuration; the message names every offending key."""


class ServiceSettings(BaseSettings):
    """Base class: `AERPLANE_` prefix, `__` nesting, values validated on assignment; the process-wide options."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="ignore",  # other services' AERPLANE_* variables share the environment
        validate_assignment=True,
        validate_default=True,
        validate_by_name=True,  # overrides (flags) by field name next to the shared variables' aliases
        use_attribute_docstrings=True,  # a field's docstring is its description: `--help` shows it (common.flags)
    )

    log_level: LogLevel = Field("INFO", validation_alias=_shared("log_level"))
    """Log level of this process."""
    log_stream: Literal["stderr", "stdout"] = Field("stderr", validation_alias=_shared("log_stream"))
    """Where log lines go; the container images set stdout (`docker logs`, `kubectl logs`)."""
    cache_dir: Path | None = Field(None, validation_alias=_shared("cache_dir"))
    """Where the embedded models are converted and kept; default `~/.cache/aerplane`."""

    @field_validator("log_level", "log_stream", mode="before")
    @classmethod
    def _lower_or_upper(cls, value: Any, info: Any) -> Any:
        if not isinstance(value, str):
            return value
        return value.strip().upper() if info.field_name == "log_level" else value.strip().lower()


class RedisSettings(BaseModel):
    """Mixin of the services that use Redis: its URL, under the one name every process reads."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    redis_url: str = Field(DEFAULT_REDIS_URL, min_length=1, validation_alias=_shared("redis_url"))
    """Redis ≥ 6.2 holding the runs' streams and state: `redis://`, `rediss://` (TLS) or `unix://` URLs."""

    @field_validator("redis_url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if value.split("://", 1)[0] not in ("redis", "rediss", "unix"):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value


class HttpSettings(BaseModel):
    """Mixin of the services with an HTTP server (API or ops: /healthz, /readyz, /metrics); each sets its port."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    host: str = Field("0.0.0.0", min_length=1)
    """Interface the HTTP server binds to (`127.0.0.1` to stay local)."""


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
