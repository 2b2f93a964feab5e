"""The services of a stack, by name and in start order, each with its command: `aerplane up` starts every child
through it (launcher.up.service_args), and cli.py registers `aerplane <service> serve` from it.

A command is the settings class its flags come from and the service's `serve` (in its app.py). Both modules are
light at import: each app.py imports its servers, engines and torch inside `serve`, so `aerplane --help` stays
fast. The learner's command is registered by its own entry module (`aerplane learner train` launches torchrun), so
its row has no `serve`: the launcher uses its settings class and argv.
"""

from __future__ import annotations

from aerplane.coefficient import app as coefficient
from aerplane.coefficient.settings import CoefficientSettings
from aerplane.common.flags import ServiceCommand
from aerplane.generation import app as generation
from aerplane.generation.settings import GenerationSettings
from aerplane.learner.settings import LearnerSettings
from aerplane.reward import app as reward
from aerplane.reward.settings import RewardSettings

SERVICES: dict[str, ServiceCommand] = {
    c.service: c
    for c in (
        ServiceCommand(
            "coefficient",
            "serve",
            CoefficientSettings,
            coefficient.serve,
            help="the AER coefficient service (gRPC + REST)",
            command_help="serve aerplane.v1.CoefficientService (gRPC) and the REST API",
            description="Owns every run's entropy-control state in Redis. Tokens have no flags (a command line is "
            "visible in `ps`): they come from the environment only.",
        ),
        ServiceCommand(
            "reward",
            "serve",
            RewardSettings,
            reward.serve,
            help="the reward verification service",
            command_help="score generated rollouts (Redis stream) and serve POST /v1/verify",
            description="Verifies answers in a pool of killable worker processes; with --no-consume it serves only "
            "POST /v1/verify, without a run or Redis.",
        ),
        ServiceCommand(
            "generation",
            "serve",
            GenerationSettings,
            generation.serve,
            help="the generation service (samples responses with the policy)",
            command_help="consume rollout requests, publish sampled responses with logprobs, reload announced weights",
            description="Samples with vLLM or transformers.",
        ),
        ServiceCommand("learner", "train", LearnerSettings, None),
    )
}
