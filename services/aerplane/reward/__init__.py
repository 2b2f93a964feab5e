"""The reward service: verifies generated answers in a pool of killable workers and publishes scored rollouts."""
