"""The reward service: verifies generated answers in a pool of killable workers and publishes scored rollouts.

Modules: `command` (the `aerplane reward serve` declaration), `settings`, `app` (the process: `build_app`, `serve`),
`http` (POST /v1/verify), `worker` (the stream loop: generated → scored), `pool` (the verification worker
processes), `scorers` (the task registry and its scorers), `metrics`.
"""
