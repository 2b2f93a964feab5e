"""The coefficient service: owns each run's entropy-control state; gRPC for the learner, REST for people."""
