"""The learner: drives a run, trains the policy with the AER-regularised loss under torch DDP or FSDP2."""
