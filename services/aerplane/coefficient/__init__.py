"""The coefficient service: owns each run's entropy-control state; gRPC for the learner, REST for people.

    AERPLANE_REDIS_URL=redis://127.0.0.1:6379/0 aerplane coefficient serve   # gRPC :50051, REST :8000 (/docs)

Modules, in the order a request meets them: `command` (the CLI declaration), `settings`, `app` (the process: both
servers, signals), `grpc` (gRPC servicer), `http` + `http_routes` + `schemas` (REST), `auth`, `errors` (one status
table for both), `store` (Redis, transactions), `runs` (pure transitions over `aerplane.core.strategies`),
`metrics`; `client` is the learner's side.
"""
