"""Worker entrypoint: `torchrun --nproc_per_node N -m aerplane.learner [flags]`, or `python -m aerplane.learner`.

Parses the flags (the same as `aerplane learner train` without the launcher ones), validates the settings, then
imports torch and trains. Ends through `distributed.finish` (barrier, destroy the group, flush, `os._exit`) so a
successful gloo run exits 0; exit code 2 for invalid settings, 1 for a failed run.
"""

from __future__ import annotations

import logging
import os
import sys


def main(argv: list[str] | None = None) -> None:
    if "TORCHELASTIC_RUN_ID" in os.environ:
        # torchrun starts each worker in a session of its own: a supervisor that kills torchrun's process group (or
        # a torchrun that is SIGKILLed) would leave the workers training on beside the learner that replaces them.
        from aerplane.common.process import set_parent_death_signal

        if not set_parent_death_signal():  # torchrun died already
            sys.exit(1)
    from aerplane.common.flags import flag_labels
    from aerplane.common.logs import setup_logging
    from aerplane.common.settings import SettingsError, load_settings
    from aerplane.learner.entry import overrides_from_args, parse_worker_args
    from aerplane.learner.settings import SECTION, LearnerSettings

    args = parse_worker_args(argv)
    try:
        settings = load_settings(
            LearnerSettings, overrides_from_args(args), section=SECTION, labels=flag_labels(args.worker_flags)
        )
    except SettingsError as exc:
        print(f"aerplane learner: invalid configuration: {exc}", file=sys.stderr)
        sys.exit(2)
    log = setup_logging("learner", settings)

    import transformers

    from aerplane.learner import distributed
    from aerplane.learner.train import train

    transformers.utils.logging.disable_progress_bar()

    try:
        code = train(settings)
    except SettingsError as exc:
        log.error("invalid configuration: %s", exc)
        distributed.finish(2, clean=False)
    except BaseException:
        logging.getLogger("aerplane.learner").exception("learner failed")
        distributed.finish(1, clean=False)
    distributed.finish(code)


if __name__ == "__main__":
    main()
