"""Bearer-token authentication for mutations; the token's name is the audited actor.

Who must authenticate (when any token is configured):
- REST: every mutation (`PATCH /v1/runs/{id}/coefficients`, `DELETE /v1/runs/{id}/overrides`). Reads are open.
- gRPC: `Override`, the people's path, via `authorization: Bearer <token>` metadata. The learner's calls
  (StartRun, GetCoefficients, ReportEntropy) and the reads are not checked: the gRPC port serves the training
  job on the cluster network, and making the learner carry an operator's token would only spread the secret.
  Expose the gRPC port only to the job (compose network, Kubernetes NetworkPolicy).

With no token configured every caller is `anonymous` (local development). Tokens are compared with
`hmac.compare_digest` against every configured token (no early exit that leaks which one nearly matched) and are
never logged or echoed in errors.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

ANONYMOUS = "anonymous"


class Unauthenticated(Exception):
    """Missing or wrong credentials (REST 401, gRPC UNAUTHENTICATED). The message never contains the token."""


class Authenticator:
    def __init__(self, tokens: Mapping[str, str]) -> None:
        self._tokens = [(name, token.encode()) for name, token in tokens.items()]

    @property
    def required(self) -> bool:
        return bool(self._tokens)

    def actor(self, authorization: str | None) -> str:
        """The actor for an `Authorization` header value; raises Unauthenticated when a token is needed and bad."""
        if not self._tokens:
            return ANONYMOUS
        if not authorization:
            raise Unauthenticated("missing credentials: send 'Authorization: Bearer <token>'")
        scheme, _, presented = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise Unauthenticated("malformed credentials: expected 'Authorization: Bearer <token>'")
        given = presented.strip().encode()
        found = None
        for name, token in self._tokens:
            if hmac.compare_digest(given, token) and found is None:
                found = name
        if found is None:
            raise Unauthenticated("invalid token")
        return found
