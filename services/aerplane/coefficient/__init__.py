"""The coefficient service: owns each run's entropy-control state; gRPC for the learner, REST for people.

    AERPLANE_REDIS_URL=redis://127.0.0.1:6379/0 aerplane coefficient serve   # gRPC :50051, REST :8000 (/docs)

Modules, in the order a request meets them: `entry` (CLI), `settings`, `server` (both servers, signals),
`service` (gRPC servicer), `api` + `routes` + `schemas` (REST), `auth`, `store` (Redis, transactions),
`runs` (pure transitions over `aerplane.core.strategies`), `metrics`; `client` is the learner's side.
"""
