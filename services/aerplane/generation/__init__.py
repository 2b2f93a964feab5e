"""The generation service: samples G responses per prompt with the current policy (vLLM or transformers).

Modules: `command` (the `aerplane generation serve` declaration), `settings`, `app` (the process: model, engine,
ops server, signals), `worker` (the rollout loop: requests → samples, weights reloads), `backends` (vLLM server,
transformers), `metrics`.
"""
