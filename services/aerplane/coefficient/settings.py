"""Configuration of `aerplane coefficient serve`: one settings class, validated at start-up.

Environment variables (CLI flags override them):

| setting | env var | default |
|---|---|---|
| host | `AERPLANE_COEFFICIENT_HOST` | `0.0.0.0` |
| grpc_port | `AERPLANE_COEFFICIENT_GRPC_PORT` | 50051 |
| http_port | `AERPLANE_COEFFICIENT_HTTP_PORT` | 8000 |
| redis_url | `AERPLANE_REDIS_URL` (shared by every service) | `redis://127.0.0.1:6379/0` |
| api_token | `AERPLANE_API_TOKEN`: the operator token (actor `operator`) | unset |
| api_tokens | `AERPLANE_API_TOKENS`: more operator tokens, `name:token,name2:token2` (the name is the actor) | unset |
| read_token | `AERPLANE_API_READ_TOKEN`: a read-only token (actor `reader`) | unset: reads are open |
| read_tokens | `AERPLANE_API_READ_TOKENS`: more read-only tokens, `name:token,…` | unset |
| learner_token | `AERPLANE_LEARNER_TOKEN` (or the old `AERPLANE_COEFFICIENT__TOKEN`): the learner's token | unset |
| … | `AERPLANE_COEFFICIENT_<FIELD>` for the rest | see the fields |

What each token may do is in `aerplane.coefficient.auth`. The service-specific variables carry the `COEFFICIENT_`
part so that one environment (compose's `.env`, `aerplane up`) can configure every service without their ports
colliding; the learner token shares its variable with the learner so that one setting configures both ends.
"""

from __future__ import annotations

import re

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from aerplane.coefficient.auth import ANONYMOUS, Authenticator, Credential, Role
from aerplane.common.settings import HttpSettings, RedisSettings, ServiceSettings

ACTOR_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
SINGLE_TOKEN_ACTOR = "operator"
READ_TOKEN_ACTOR = "reader"
LEARNER_ACTOR = "learner"


class CoefficientSettings(ServiceSettings, RedisSettings, HttpSettings):
    """Settings of the coefficient service (gRPC for the learner, REST for people, state in Redis)."""

    # The shared variables are aliases (no prefix); validate_by_name (ServiceSettings) keeps `redis_url=...` working.
    # (A by-name alias choice would also read a bare API_TOKEN from the environment.)
    model_config = SettingsConfigDict(env_prefix="AERPLANE_COEFFICIENT_", validate_by_name=True)

    grpc_port: int = Field(50051, ge=0, le=65535)
    """gRPC port of aerplane.v1.CoefficientService, the health service and reflection (0: any free port)."""

    http_port: int = Field(8000, ge=0, le=65535)
    """REST API, /docs, /healthz, /readyz and /metrics (0: any free port)."""

    api_token: SecretStr | None = Field(None, validation_alias="AERPLANE_API_TOKEN")
    """The operator token: mutations (REST PATCH/DELETE, gRPC Override) need it or one of `api_tokens`; it may also
    read and make the learner's calls. Audited as actor `operator`. With any token configured, mutations need one."""

    api_tokens: SecretStr | None = Field(None, validation_alias="AERPLANE_API_TOKENS")
    """More operator tokens, one per person or tool: `name:token,name2:token2`; the name is the audited actor."""

    read_token: SecretStr | None = Field(None, validation_alias="AERPLANE_API_READ_TOKEN")
    """A read-only token (actor `reader`): once set, reads (REST GETs under /v1; gRPC GetState, ListRuns,
    WatchState) need it or any other token. Unset: reads are open."""

    read_tokens: SecretStr | None = Field(None, validation_alias="AERPLANE_API_READ_TOKENS")
    """More read-only tokens: `name:token,name2:token2`; the name is the actor."""

    learner_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("AERPLANE_LEARNER_TOKEN", "AERPLANE_COEFFICIENT__TOKEN")
    )
    """The learner's token (actor `learner`): once set, the learner's gRPC calls (StartRun, GetCoefficients,
    ReportEntropy) need it (or an operator token) in their `authorization` metadata. It may also read, never mutate.
    The learner sends it from the same variable. Unset: the learner's calls are open."""

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

    stream_seconds: float = Field(30.0, gt=0, le=3600)
    """The console's live stream (`GET /v1/runs/{run_id}/stream`) ends after this long and the page reconnects where it
    left off: an open browser tab never holds a shutdown longer than this."""

    shutdown_grace_seconds: float = Field(5.0, ge=0, le=300)
    """On SIGTERM, in-flight requests get this long to finish."""

    @field_validator("api_token", "read_token", "learner_token")
    @classmethod
    def _token_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            return None  # `AERPLANE_API_TOKEN=` (empty) means no token, as in compose files
        return value

    @field_validator("api_tokens", "read_tokens")
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
        self.credentials()  # reserved actor names, a token given two roles
        return self

    def credentials(self) -> list[Credential]:
        """Every configured token with its actor and role. Raises ValueError (naming the setting, never the token)
        for an actor name used twice or reserved, or one token given to two actors."""
        out: list[Credential] = []
        sources = [
            ("api_tokens", Role.OPERATOR, self.api_tokens, None),
            ("api_token", Role.OPERATOR, self.api_token, SINGLE_TOKEN_ACTOR),
            ("read_tokens", Role.READER, self.read_tokens, None),
            ("read_token", Role.READER, self.read_token, READ_TOKEN_ACTOR),
            ("learner_token", Role.LEARNER, self.learner_token, LEARNER_ACTOR),
        ]
        reserved = {SINGLE_TOKEN_ACTOR, READ_TOKEN_ACTOR, LEARNER_ACTOR, ANONYMOUS}
        actors: dict[str, str] = {}
        tokens: dict[str, str] = {}
        for key, role, secret, single_actor in sources:
            if secret is None:
                continue
            named = (
                {single_actor: secret.get_secret_value()}
                if single_actor
                else parse_token_list(secret.get_secret_value())
            )
            for actor, token in named.items():
                if single_actor is None and actor in reserved:
                    raise ValueError(f"{key}: actor {actor!r} is reserved (for api_token, read_token, learner_token)")
                if actor in actors:
                    raise ValueError(f"{key}: actor {actor!r} is also named in {actors[actor]}")
                if token in tokens:
                    raise ValueError(
                        f"{key}: the token of {actor!r} is also the token of {tokens[token]}; give "
                        "every actor its own token"
                    )
                actors[actor] = key
                tokens[token] = f"{actor!r} ({key})"
                out.append(Credential(actor, role, token.encode()))
        return out

    def authenticator(self) -> Authenticator:
        return Authenticator(self.credentials())


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
