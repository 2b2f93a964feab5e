"""Tasks and datasets: reasoning-gym training tasks, held-out evaluation sets, users' jsonl/parquet."""
