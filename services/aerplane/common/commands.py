"""The services' commands, declared once: `aerplane <service> <command>` registers each from here (cli.py), and
`aerplane up` starts each child through the same entry (launcher.up.service_args).

Only strings: importing this module imports no service. `settings` and `serve` are "module:attribute" paths,
imported when a parser is built or a command runs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ServiceCommand:
    service: str
    command: str
    settings: str  # "module:Class", the settings class its flags come from
    serve: str | None  # "module:function" it runs; None where an entry module registers it (the learner: torchrun)
    help: str = ""
    command_help: str = ""
    description: str = ""

    @property
    def argv(self) -> tuple[str, str]:
        return self.service, self.command

    def settings_class(self) -> Any:
        module, name = self.settings.split(":")
        return getattr(importlib.import_module(module), name)


SERVICES: dict[str, ServiceCommand] = {
    c.service: c
    for c in (
        ServiceCommand(
            "coefficient",
            "serve",
            "aerplane.coefficient.settings:CoefficientSettings",
            "aerplane.coefficient.server:serve",
            help="the AER coefficient service (gRPC + REST)",
            command_help="serve aerplane.v1.CoefficientService (gRPC) and the REST API",
            description="Owns every run's entropy-control state in Redis. Tokens have no flags (a command line is "
            "visible in `ps`): they come from the environment only.",
        ),
        ServiceCommand(
            "reward",
            "serve",
            "aerplane.reward.settings:RewardSettings",
            "aerplane.reward.api:serve",
            help="the reward verification service",
            command_help="score generated rollouts (Redis stream) and serve POST /v1/verify",
            description="Verifies answers in a pool of killable worker processes; with --no-consume it serves only "
            "POST /v1/verify, without a run or Redis.",
        ),
        ServiceCommand(
            "generation",
            "serve",
            "aerplane.generation.settings:GenerationSettings",
            "aerplane.generation.service:serve",
            help="the generation service (samples responses with the policy)",
            command_help="consume rollout requests, publish sampled responses with logprobs, reload announced weights",
            description="Samples with vLLM or transformers.",
        ),
        ServiceCommand("learner", "train", "aerplane.learner.settings:LearnerSettings", None),
    )
}
