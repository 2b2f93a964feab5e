"""What the services train and sample on: tasks and datasets (tasks.py: reasoning-gym training tasks, held-out
evaluation sets, users' jsonl/parquet) and the embedded models (embedded_models.py, prepared by the `aerplane model`
commands in model_commands.py)."""
