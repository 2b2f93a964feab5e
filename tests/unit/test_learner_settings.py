"""Learner settings, CLI flags and the learning-rate schedule."""

from __future__ import annotations

import argparse
import subprocess
import sys
import typing

import pytest

from aerplane.common.settings import SettingsError, load_settings
from aerplane.core.policy_losses import POLICY_LOSS_NAMES, KlCov
from aerplane.learner import entry
from aerplane.learner.settings import SECTION, LearnerSettings, LossSettings


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    entry.register(sub)
    return parser.parse_args(argv)


def test_defaults_match_the_design() -> None:
    s = load_settings(LearnerSettings, {}, section=SECTION)
    assert (s.loss.eps_low, s.loss.eps_high, s.loss.aggregation) == (0.2, 0.28, "token-mean")
    assert s.run.staleness == 1 and s.http_port == 8003 and s.strategy.name == "aer"
    assert s.checkpoint_dir == s.run_dir / "checkpoints" and s.weights_dir == s.run_dir / "weights"


def test_environment_and_flags_merge_with_flags_winning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AERPLANE_LEARNER_OPTIM__WEIGHT_DECAY", "0.1")
    monkeypatch.setenv("AERPLANE_LEARNER_OPTIM__LR", "0.5")
    monkeypatch.setenv("AERPLANE_LEARNER_STRATEGY__PARAMS", '{"rho": 0.4}')
    args = _parse(
        [
            "learner",
            "train",
            "--lr",
            "3e-6",
            "--strategy-param",
            "eta=0.01",
            "--strategy-param",
            "weighting=linear",
            "--no-normalize-std",
            "--resume",
        ]
    )
    s = load_settings(LearnerSettings, entry.overrides_from_args(args), section=SECTION)
    assert s.optim.lr == 3e-6 and s.optim.weight_decay == 0.1
    assert s.strategy.params == {"rho": 0.4, "eta": 0.01} and s.strategy.options == {"weighting": "linear"}
    assert s.loss.normalize_std is False and s.run.resume is True


def test_strategy_param_none_restores_the_default_over_the_environment_and_bad_text_names_the_flag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AERPLANE_LEARNER_STRATEGY__PARAMS__TARGET_ENTROPY", "0.3")
    monkeypatch.setenv("AERPLANE_LEARNER_STRATEGY__OPTIONS__WEIGHTING", "linear")
    assert load_settings(LearnerSettings, {}, section=SECTION).strategy.params == {"target_entropy": 0.3}
    args = _parse(
        [
            "learner",
            "train",
            "--strategy-param",
            "target_entropy=none",
            "--strategy-param",
            "weighting=none",
            "--strategy-param",
            "rho=0.25",
        ]
    )
    s = load_settings(LearnerSettings, entry.overrides_from_args(args), section=SECTION)
    assert s.strategy.params == {"rho": 0.25} and s.strategy.options == {}
    with pytest.raises(SettingsError, match=r"--strategy-param: expected KEY=VALUE, got 'rho'"):
        entry.overrides_from_args(_parse(["learner", "train", "--strategy-param", "rho"]))


def test_launcher_renders_strategy_parameters_that_the_learner_reads_back_exactly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from aerplane.launcher.up import service_args

    params = {"eta": 0.1 + 0.2, "anchor_steps": 3.0}
    argv = service_args("learner", {"strategy": {"name": "aer", "params": params, "options": {"weighting": "linear"}}})
    assert argv[:2] == ["learner", "train"] and "--strategy-param" not in argv  # the one spelling: no warning
    assert argv[argv.index("--strategy") + 1] == "aer:eta=0.30000000000000004:anchor_steps=3.0:weighting=linear"
    s = load_settings(LearnerSettings, entry.overrides_from_args(_parse(argv)), section=SECTION)
    assert s.strategy.params == params and s.strategy.options == {"weighting": "linear"}
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"optim": {"lr": -1}}, "learner.optim.lr"),
        ({"batch": {"samples_per_prompt": 0}}, "learner.batch.samples_per_prompt"),
        ({"loss": {"policy_loss": "ppo2"}}, "learner.loss.policy_loss"),
        ({"loss": {"policy_loss": "clip_cov", "policy_loss_params": {"clip_cov_ub": 0.5}}}, "loss.policy_loss_params"),
        ({"run": {"run_id": "bad id!"}}, "learner.run.run_id"),
        ({"batch": {"prompts_per_step": 6, "mini_batches": 4}}, "batch.prompts_per_step"),
        ({"strategy": {"params": {"rho": float("nan")}}}, "learner.strategy.params"),
        ({"redis_url": "http://x"}, "redis_url"),
        ({"weights": {"interval": 3}}, "weights.interval"),
        ({"model": {"parallel": "zero3"}}, "learner.model.parallel"),
        ({"model": {"dtype": "float16"}}, "model.dtype"),
    ],
)
def test_invalid_values_name_the_key(overrides: dict, key: str) -> None:
    with pytest.raises(SettingsError, match=key.replace(".", r"\.")):
        load_settings(LearnerSettings, overrides, section=SECTION)


def test_policy_loss_choices_and_parameters_come_from_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    assert typing.get_args(LossSettings.model_fields["policy_loss"].annotation) == POLICY_LOSS_NAMES
    monkeypatch.setenv("AERPLANE_LEARNER_LOSS__POLICY_LOSS", "kl_cov")
    monkeypatch.setenv("AERPLANE_LEARNER_LOSS__POLICY_LOSS_PARAMS", '{"kl_cov_coef": 0.5}')
    s = load_settings(LearnerSettings, {}, section=SECTION)
    assert s.loss.policy == KlCov(kl_cov_ratio=2e-4, kl_cov_coef=0.5)
    snapshot = s.snapshot()["loss"]  # the run's learner_settings.json: the name and the parameters as given
    assert (snapshot["policy_loss"], snapshot["policy_loss_params"]) == ("kl_cov", {"kl_cov_coef": 0.5})
    monkeypatch.setenv("AERPLANE_LEARNER_LOSS__POLICY_LOSS_PARAMS", '{"kl_cov_coeff": 0.5}')
    with pytest.raises(SettingsError) as err:
        load_settings(LearnerSettings, {}, section=SECTION)
    assert str(err.value) == (
        "learner.loss.policy_loss_params: kl_cov_coeff: unknown parameter for policy_loss 'kl_cov' "
        "(allowed: kl_cov_ratio, kl_cov_coef)"
    )


def test_policy_loss_parameters_are_checked_without_torch() -> None:
    code = (
        "import sys\n"
        "from aerplane.learner.settings import LossSettings\n"
        "try:\n"
        "    LossSettings(policy_loss='clip_cov', policy_loss_params={'clip_cov_ratio': 2.0})\n"
        "except ValueError as exc:\n"
        "    print('clip_cov_ratio: must be less than or equal to 1' in str(exc), 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["True", "False"]


def test_the_names_other_services_share_are_understood(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AERPLANE_LEARNER_MODEL", "smollm2-135m")
    monkeypatch.setenv("AERPLANE_RUN_ID", "shared")
    s = load_settings(LearnerSettings, {}, section=SECTION)
    assert s.model.path == "smollm2-135m" and s.run.run_id == "shared"
    s = load_settings(LearnerSettings, {"run": {"run_id": "mine"}}, section=SECTION)
    assert s.run.run_id == "mine"
    monkeypatch.delenv("AERPLANE_LEARNER_MODEL")
    monkeypatch.setenv("AERPLANE_LEARNER_MODEL__DTYPE", "bfloat16")
    assert load_settings(LearnerSettings, {}, section=SECTION).model.dtype == "bfloat16"


def test_the_old_variable_names_still_work_below_the_new_ones_and_say_what_replaces_them(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from aerplane.learner import settings as learner_settings

    monkeypatch.setattr(learner_settings, "_warned", set())
    old = {
        "AERPLANE_OPTIM__LR": "0.5",
        "AERPLANE_HTTP_PORT": "9003",
        "AERPLANE_DEVICE": "cpu",
        "AERPLANE_MODEL": "tiny",
        "AERPLANE_STRATEGY__PARAMS": '{"rho": 0.4}',
        "AERPLANE_COEFFICIENT__TOKEN": "old-token",
    }
    for name, value in old.items():
        monkeypatch.setenv(name, value)
    with caplog.at_level("WARNING"):
        s = load_settings(LearnerSettings, {}, section=SECTION)
    assert (s.optim.lr, s.http_port, s.device, s.model.path) == (0.5, 9003, "cpu", "tiny")
    assert s.strategy.params == {"rho": 0.4} and s.coefficient.token.get_secret_value() == "old-token"
    assert "AERPLANE_OPTIM__LR is the learner's old variable name: use AERPLANE_LEARNER_OPTIM__LR" in caplog.text
    assert "use AERPLANE_LEARNER_TOKEN" in caplog.text and "use AERPLANE_LEARNER_HTTP_PORT" in caplog.text
    monkeypatch.setenv("AERPLANE_LEARNER_OPTIM__LR", "0.25")  # the new name wins
    monkeypatch.setenv("AERPLANE_LEARNER_TOKEN", "new-token")
    s = load_settings(LearnerSettings, {}, section=SECTION)
    assert s.optim.lr == 0.25 and s.coefficient.token.get_secret_value() == "new-token"
    # Another service's variables are not taken for the learner's.
    monkeypatch.setenv("AERPLANE_REWARD_HTTP_PORT", "7001")
    assert load_settings(LearnerSettings, {}, section=SECTION).http_port == 9003


def test_world_size_check_names_the_full_key() -> None:
    s = load_settings(LearnerSettings, {"batch": {"prompts_per_step": 3}}, section=SECTION)
    with pytest.raises(SettingsError, match=r"learner\.batch\.prompts_per_step: must be divisible by world size 2"):
        s.check_world(2)
    s.check_world(3)


def test_train_builds_the_torchrun_command_and_checks_the_world_first() -> None:
    args = _parse(
        [
            "learner",
            "train",
            "--nproc-per-node",
            "2",
            "--run-id",
            "r1",
            "--steps",
            "3",
            "--lr",
            "1e-5",
            "--strategy-param",
            "rho=0.5",
        ]
    )
    cmd = entry.torchrun_argv(args)
    assert cmd[1:3] == ["-m", "torch.distributed.run"] and "--standalone" in cmd
    assert cmd[cmd.index("--nproc_per_node") + 1] == "2"
    tail = cmd[cmd.index("aerplane.learner") + 1 :]
    pairs = {(tail[i], tail[i + 1]) for i in range(0, len(tail), 2)}
    assert len(tail) == 8 and pairs == {
        ("--run-id", "r1"),
        ("--steps", "3"),
        ("--lr", "1e-05"),
        ("--strategy", "aer:rho=0.5"),  # the old spelling goes on to the workers in the new one
    }
    multi = _parse(["learner", "train", "--nnodes", "2", "--rdzv-endpoint", "h:29400", "--rdzv-id", "x"])
    cmd = entry.torchrun_argv(multi)
    assert "--standalone" not in cmd and cmd[cmd.index("--rdzv_endpoint") + 1] == "h:29400"
    # The worker parses exactly what the launcher forwards.
    worker = entry.parse_worker_args(tail)
    assert entry.overrides_from_args(worker) == entry.overrides_from_args(args)
    bools = _parse(["learner", "train", "--resume", "--no-normalize-std", "--data-shuffle"])
    assert [a for a in entry.worker_argv(bools) if a.startswith("--")] == [
        "--no-normalize-std",
        "--data-shuffle",
        "--resume",
    ]


def test_cli_rejects_a_batch_the_world_cannot_split_before_launching() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "aerplane.cli",
            "learner",
            "train",
            "--nproc-per-node",
            "2",
            "--prompts-per-step",
            "3",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "learner.batch.prompts_per_step: must be divisible by world size 2" in out.stderr


def test_lr_schedules() -> None:
    from aerplane.learner.trainable import lr_factor

    assert [lr_factor(u, schedule="constant", warmup=2, total=10, min_ratio=0) for u in (0, 1, 2, 9)] == [
        0.5,
        1.0,
        1.0,
        1.0,
    ]
    assert lr_factor(0, schedule="cosine", warmup=0, total=10, min_ratio=0.0) == 1.0
    assert lr_factor(5, schedule="cosine", warmup=0, total=10, min_ratio=0.0) == pytest.approx(0.5)
    assert lr_factor(10, schedule="cosine", warmup=0, total=10, min_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(5, schedule="linear", warmup=0, total=10, min_ratio=0.0) == pytest.approx(0.5)


def test_parallel_and_precision_flags_reach_the_worker() -> None:
    args = _parse(["learner", "train", "--nproc-per-node", "2", "--parallel", "fsdp", "--dtype", "bfloat16"])
    s = load_settings(LearnerSettings, entry.overrides_from_args(args), section=SECTION)
    assert (s.model.parallel, s.model.dtype) == ("fsdp", "bfloat16")
    tail = entry.torchrun_argv(args)
    assert tail[tail.index("aerplane.learner") + 1 :] == ["--dtype", "bfloat16", "--parallel", "fsdp"]
    assert load_settings(LearnerSettings, {}, section=SECTION).model.parallel == "ddp"


def test_the_coefficient_token_comes_from_the_shared_variable_and_is_never_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`AERPLANE_LEARNER_TOKEN` is also what the coefficient service reads as its learner token."""
    monkeypatch.setenv("AERPLANE_LEARNER_TOKEN", "learner-secret")
    s = load_settings(LearnerSettings, {}, section=SECTION)
    assert s.coefficient.token is not None and s.coefficient.token.get_secret_value() == "learner-secret"
    assert "learner-secret" not in repr(s) and "learner-secret" not in str(s.snapshot())
    assert s.snapshot()["coefficient"]["token"] == "***"
