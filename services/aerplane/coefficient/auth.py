"""Bearer tokens by role; the token's name is the audited actor.

Three roles, each a set of permissions:

- **operator** (`api_token`: actor `operator`; `api_tokens`: actor = its name): reads, the learner's calls and
  mutations (REST PATCH/DELETE, gRPC Override);
- **learner** (`learner_token`: actor `learner`): reads and the learner's gRPC calls (StartRun, GetCoefficients,
  ReportEntropy);
- **read-only** (`read_token`: actor `reader`; `read_tokens`: actor = its name): reads (REST GETs under /v1; gRPC
  GetState, ListRuns, WatchState).

With no token configured nothing is checked and every caller is `anonymous` (local development). Once any token
is configured, mutations need an operator token (so configuring only a read token leaves no way to mutate). The
other two permissions stay open until a token of their own kind exists — reads until a read-only token is
configured, the learner's calls until a learner token is — which keeps a deployment that set only
`AERPLANE_API_TOKEN` working as before. `/healthz`, `/readyz`, `/metrics` and the gRPC health and reflection services
are never checked (probes and Prometheus).

A missing, malformed or unknown token is `Unauthenticated` (REST 401, gRPC UNAUTHENTICATED); a known token without
the permission is `PermissionDenied` (403, PERMISSION_DENIED). Tokens are compared with `hmac.compare_digest`
against every configured token (no early exit that leaks which one nearly matched) and are never logged or echoed
in errors.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

ANONYMOUS = "anonymous"


class Permission(enum.Enum):
    READ = "read"
    LEARN = "learn"
    OPERATE = "operate"


class Role(enum.Enum):
    READER = "read-only"
    LEARNER = "learner"
    OPERATOR = "operator"


GRANTS: dict[Role, frozenset[Permission]] = {
    Role.READER: frozenset({Permission.READ}),
    Role.LEARNER: frozenset({Permission.READ, Permission.LEARN}),
    Role.OPERATOR: frozenset(Permission),
}
# The permission a token of this role unlocks: configuring one makes that permission required.
_GATES = {Role.READER: Permission.READ, Role.LEARNER: Permission.LEARN, Role.OPERATOR: Permission.OPERATE}


class Unauthenticated(Exception):
    """Missing or wrong credentials (REST 401, gRPC UNAUTHENTICATED). The message never contains the token."""


class PermissionDenied(Exception):
    """A valid token whose role lacks the permission (REST 403, gRPC PERMISSION_DENIED)."""


@dataclass(frozen=True)
class Credential:
    actor: str
    role: Role
    token: bytes

    def __repr__(self) -> str:  # never the token
        return f"Credential(actor={self.actor!r}, role={self.role.value})"


class Authenticator:
    def __init__(self, credentials: Sequence[Credential] = ()) -> None:
        self._credentials = list(credentials)
        configured = {c.role for c in self._credentials}
        self._required = {_GATES[role] for role in configured}
        if configured:
            self._required.add(Permission.OPERATE)

    @property
    def required(self) -> bool:
        """Whether any token is configured."""
        return bool(self._credentials)

    def enforced(self, permission: Permission) -> bool:
        """Whether calls needing `permission` must present a token."""
        return permission in self._required

    def describe(self) -> str:
        """What needs a token, for the start-up log (names the permissions, never a token)."""
        if not self.required:
            return "off (no token configured)"
        labels = {Permission.READ: "reads", Permission.LEARN: "learner calls", Permission.OPERATE: "mutations"}
        return ", ".join(f"{labels[p]} {'need a token' if self.enforced(p) else 'open'}" for p in Permission)

    def authorize(self, authorization: str | None, permission: Permission) -> str:
        """The actor for an `Authorization` value (`Bearer <token>`) allowed `permission`.

        Returns `anonymous` when the permission is not enforced (the header is then not looked at); raises
        Unauthenticated or PermissionDenied."""
        if not self.enforced(permission):
            return ANONYMOUS
        credential = self._identify(authorization)
        if permission not in GRANTS[credential.role]:
            raise PermissionDenied(f"a {credential.role.value} token may not {_ACTIONS[permission]}")
        return credential.actor

    def _identify(self, authorization: str | None) -> Credential:
        if not authorization:
            raise Unauthenticated("missing credentials: send 'Authorization: Bearer <token>'")
        scheme, _, presented = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise Unauthenticated("malformed credentials: expected 'Authorization: Bearer <token>'")
        given = presented.strip().encode()
        found = None
        for credential in self._credentials:
            if hmac.compare_digest(given, credential.token) and found is None:
                found = credential
        if found is None:
            raise Unauthenticated("invalid token")
        return found


_ACTIONS = {
    Permission.READ: "read",
    Permission.LEARN: "make the learner's calls",
    Permission.OPERATE: "change a run (operator token needed)",
}
