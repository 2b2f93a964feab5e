"""Where the learner gets α_t and λ_q, and where it reports H_t: the coefficient service, or the strategy in-process.

`RemoteCoefficients` talks to the coefficient service over gRPC (DESIGN §2): the service owns the run's state, so
people can watch and override it while the run goes; resuming a run resumes its state there. `LocalCoefficients`
runs the same `aerplane.core.strategies` object inside the learner (`--coefficient-target local`) for benchmarks
and runs without the service; its state travels in the learner's checkpoint instead. Both report the same way,
so the learner's loop does not know which one it has.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from aerplane.core.step_figures import NO_FIGURES, StepFigures

if TYPE_CHECKING:
    from aerplane.learner.settings import CoefficientSettings, StrategySettings

log = logging.getLogger(__name__)
T = TypeVar("T")

PromptStats = tuple[str, float, int]  # (prompt_id, accuracy, num_samples)


class CoefficientSource(Protocol):
    def start(self, resume: bool) -> dict[str, Any]: ...
    def coefficients(self, step: int, prompts: Sequence[PromptStats]) -> tuple[float, list[float], float | None]: ...
    def report(
        self, step: int, mean_entropy: float, num_tokens: int, figures: StepFigures = NO_FIGURES
    ) -> dict[str, Any]: ...
    def state(self) -> dict[str, Any]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, data: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class LocalCoefficients:
    """The strategy in-process: same maths, no service, no overrides; state kept in the learner's checkpoint."""

    def __init__(self, strategy: str, params: dict[str, float], options: dict[str, str]) -> None:
        from aerplane.core.strategies import build_strategy
        from aerplane.learner.settings import strategy_kwargs

        self.strategy = build_strategy(strategy, **strategy_kwargs(params, options))
        self.name = strategy
        self._state = self.strategy.initial_state()
        self._applied_step = -1

    def start(self, resume: bool) -> dict[str, Any]:
        return self.state()

    def coefficients(self, step: int, prompts: Sequence[PromptStats]) -> tuple[float, list[float], float | None]:
        weights = self.strategy.prompt_weights(self._state, [acc for _, acc, _ in prompts])
        return self.strategy.coefficient(self._state), list(weights), self._state.target_entropy

    def report(
        self, step: int, mean_entropy: float, num_tokens: int, figures: StepFigures = NO_FIGURES
    ) -> dict[str, Any]:
        """Apply H_t (the figures have no one to show them to here: metrics.jsonl has them)."""
        if step > self._applied_step:  # idempotent by step, like the service
            self._state = self.strategy.observe(self._state, entropy=mean_entropy)
            self._applied_step = step
        return self.state()

    def state(self) -> dict[str, Any]:
        return {"strategy": self.name, **self._state.to_dict()}

    def state_dict(self) -> dict[str, Any]:
        return {"state": self._state.to_dict(), "applied_step": self._applied_step}

    def load_state_dict(self, data: dict[str, Any]) -> None:
        from aerplane.core.strategies import StrategyState

        self._state = StrategyState.from_dict(data["state"])
        self._applied_step = int(data["applied_step"])

    def close(self) -> None:
        return None


class RemoteCoefficients:
    """The coefficient service over gRPC (`aerplane.coefficient.client.CoefficientClient`)."""

    def __init__(
        self,
        target: str,
        run_id: str,
        strategy: str,
        params: dict[str, float],
        options: dict[str, str],
        *,
        timeout: float = 10.0,
        token: str | None = None,
        outage_s: float = 300.0,
    ) -> None:
        from aerplane.coefficient.client import CoefficientClient

        self.client = CoefficientClient(target, timeout=timeout, token=token)
        self.outage_s = outage_s
        self.run_id = run_id
        self.strategy = strategy
        self.params = dict(params)
        self.options = dict(options)

    def _retrying(self, call: Callable[[], T]) -> T:
        """`call`, retried with backoff (0.5 s doubling to 5 s) while the service is unreachable or too slow to
        answer — a restart — for up to `outage_s`; other errors at once."""
        import grpc

        from aerplane.coefficient.client import CoefficientError
        from aerplane.common.retry import SERVICE_BACKOFF, call_with_retry

        def unreachable(exc: BaseException) -> bool:
            return isinstance(exc, CoefficientError) and exc.code in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            )

        return call_with_retry(
            call,
            retryable=unreachable,
            timeout_s=self.outage_s,
            backoff=SERVICE_BACKOFF,
            what="coefficient service",
            log=log,
        )

    def start(self, resume: bool) -> dict[str, Any]:
        return dict(
            self._retrying(lambda: self.client.start_run(self.run_id, self.strategy, self.params, self.options, resume))
        )

    def coefficients(self, step: int, prompts: Sequence[PromptStats]) -> tuple[float, list[float], float | None]:
        alpha, weights, target = self._retrying(lambda: self.client.get_coefficients(self.run_id, step, list(prompts)))
        return float(alpha), [float(w) for w in weights], (float(target) if target else None)

    def report(
        self, step: int, mean_entropy: float, num_tokens: int, figures: StepFigures = NO_FIGURES
    ) -> dict[str, Any]:
        from aerplane.coefficient.client import StaleStepError

        # A resumed learner re-trains the steps after its last checkpoint, which it may have reported before it died:
        # the service applies each step's entropy once, so such a report changes nothing (α does not move twice).
        try:
            extras = dataclasses.asdict(figures)
            return dict(
                self._retrying(
                    lambda: self.client.report_entropy(self.run_id, step, mean_entropy, num_tokens, **extras)
                )
            )
        except StaleStepError as exc:  # an older step the service never applied: it cannot be applied out of order
            log.warning("step %d: the coefficient service refused the report (%s); keeping its state", step, exc)
            return self.state()

    def state(self) -> dict[str, Any]:
        return dict(self._retrying(lambda: self.client.get_state(self.run_id)))

    def state_dict(self) -> dict[str, Any]:
        return {}  # the service keeps the state

    def load_state_dict(self, data: dict[str, Any]) -> None:
        return None

    def close(self) -> None:
        self.client.close()


def build_coefficients(strategy: StrategySettings, coefficient: CoefficientSettings, run_id: str) -> CoefficientSource:
    """The coefficient service at `coefficient.target`, or the strategy in-process when the target is `local`."""
    if coefficient.target.strip().lower() == "local":
        return LocalCoefficients(strategy.name, strategy.params, strategy.options)
    return RemoteCoefficients(
        coefficient.target,
        run_id,
        strategy.name,
        strategy.params,
        strategy.options,
        timeout=coefficient.timeout_s,
        token=coefficient.token.get_secret_value() if coefficient.token else None,
        outage_s=coefficient.outage_s,
    )
