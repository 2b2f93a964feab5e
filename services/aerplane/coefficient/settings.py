"""Configuration of `aerplane coefficient serve`: one settings class, validated at start-up.

Environment variables (CLI flags override them):

| setting | env var | default |
|---|---|---|
| host | `AERPLANE_COEFFICIENT_HOST` | `0.0.0.0` |
| grpc_port | `AERPLANE_COEFFICIENT_GRPC_PORT` | 50051 |
| http_port | `AERPLANE_COEFFICIENT_HTTP_PORT` | 8000 |
| redis_url | `AERPLANE_REDIS_URL` (shared by every service) | `redis://127.0.0.1:6379/0` |
| api_token | `AERPLANE_API_TOKEN` (one token; its actor is `operator`) | unset: no auth |
| api_tokens | `AERPLANE_API_TOKENS` (`name:token,name2:token2`; the name is the audited actor) | unset |
| … | `AERPLANE_COEFFICIENT_<FIELD>` for the rest | see the fields |

The service-specific variables carry the `COEFFICIENT_` part so that one environment (compose's `.env`, `aerplane up`)
can configure every service without their ports colliding.
"""

from __future__ import annotations

import re

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from aerplane.common.settings import ServiceSettings

ACTOR_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
SINGLE_TOKEN_ACTOR = "operator"


class CoefficientSettings(ServiceSettings):
    """Settings of the coefficient service (gRPC for the learner, REST for people, state in Redis)."""

    # The shared variables are aliases (no prefix); validate_by_name keeps `redis_url=...` working for CLI overrides.
    # (A by-name alias choice would also read a bare REDIS_URL / API_TOKEN from the environment.)
    model_config = SettingsConfigDict(env_prefix="AERPLANE_COEFFICIENT_", validate_by_name=True)

    host: str = Field("0.0.0.0", min_length=1)
    """Interface both servers bind to (`127.0.0.1` to stay local)."""

    grpc_port: int = Field(50051, ge=0, le=65535)
    """gRPC port of aerplane.v1.CoefficientService, the health service and reflection (0: any free port)."""

    http_port: int = Field(8000, ge=0, le=65535)
    """REST API, /docs, /healthz, /readyz and /metrics (0: any free port)."""

    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias="AERPLANE_REDIS_URL", min_length=1)
    """Where every run's state, history and audit live (Redis ≥ 6.2)."""

    api_token: SecretStr | None = Field(None, validation_alias="AERPLANE_API_TOKEN")
    """Bearer token that mutations (REST PATCH/DELETE, gRPC Override) need; audited as actor `operator`."""

    api_tokens: SecretStr | None = Field(None, validation_alias="AERPLANE_API_TOKENS")
    """More tokens, one per person or tool: `name:token,name2:token2`; the name is the audited actor."""

    max_body_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    """Largest REST request body; bigger ones get 422."""

    max_prompts: int = Field(65536, ge=1)
    """Most prompts one GetCoefficients may carry."""

    grpc_workers: int = Field(16, ge=2, le=1024)
    """gRPC handler threads; open WatchState streams may hold at most half of them."""

    grpc_max_message_bytes: int = Field(16 * 1024 * 1024, ge=64 * 1024)
    """Largest gRPC message, both directions."""

    watch_poll_seconds: float = Field(1.0, gt=0, le=60)
    """WatchState re-reads the run this often even without a change notice (covers a Redis reconnect)."""

    shutdown_grace_seconds: float = Field(5.0, ge=0, le=300)
    """On SIGTERM, in-flight requests get this long to finish."""

    @field_validator("api_token")
    @classmethod
    def _token_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            return None  # `AERPLANE_API_TOKEN=` (empty) means no token, as in compose files
        return value

    @field_validator("api_tokens")
    @classmethod
    def _tokens_well_formed(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        parse_token_list(value.get_secret_value())  # raises ValueError without echoing any token
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CoefficientSettings:
        if self.grpc_port and self.grpc_port == self.http_port:
            raise ValueError(f"grpc_port and http_port must differ (both {self.grpc_port})")
        self.tokens()  # the reserved actor name
        return self

    def tokens(self) -> dict[str, str]:
        """Actor name → token, from api_token (actor `operator`) and api_tokens."""
        out: dict[str, str] = {}
        if self.api_tokens is not None:
            out.update(parse_token_list(self.api_tokens.get_secret_value()))
        if self.api_token is not None:
            if SINGLE_TOKEN_ACTOR in out:
                raise ValueError(f"api_tokens: actor {SINGLE_TOKEN_ACTOR!r} is reserved for api_token")
            out[SINGLE_TOKEN_ACTOR] = self.api_token.get_secret_value()
        return out


def parse_token_list(text: str) -> dict[str, str]:
    """`name:token,name2:token2` → {name: token}. Errors name the entry by position, never the token."""
    out: dict[str, str] = {}
    for i, entry in enumerate(p.strip() for p in text.split(",")):
        if not entry:
            continue
        name, sep, token = entry.partition(":")
        name, token = name.strip(), token.strip()
        if not sep or not token:
            raise ValueError(f"entry {i + 1}: expected name:token")
        if not ACTOR_RE.match(name):
            raise ValueError(f"entry {i + 1}: actor name must match {ACTOR_RE.pattern}")
        if name in out:
            raise ValueError(f"entry {i + 1}: actor {name!r} appears twice")
        out[name] = token
    if not out:
        raise ValueError("expected at least one name:token")
    return out
