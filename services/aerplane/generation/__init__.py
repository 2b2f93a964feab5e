"""The generation service: samples G responses per prompt with the current policy (vLLM or transformers)."""
