"""In-process transformers backend: `model.generate()` on the policy, for machines without vLLM.

Requests with the same (temperature, top_p, max_tokens) are batched into one left-padded `generate()` call, each
prompt repeated `n` times, in chunks of at most `max_batch_tokens` (sequences × (prompt + max_tokens)). Sampling is
pure temperature / top-p (top-k off, as vLLM's default), so both backends draw from the same distribution.

The logprob of each sampled token is taken from the step's float32 logits by a logits processor that also applies
temperature and top-p (`_LogprobRecorder`): raw (`log_softmax(logits)`, vLLM's `raw_logprobs`) or processed (after
temperature and top-p, `processed_logprobs`). A sequence ends at its first end-of-sequence token, which is kept
(with its logprob) so the learner trains the model to stop.

Seeds: one `generate()` call draws from torch's global generator, seeded from the first request's seed of the call
(or the backend's running seed), so runs are reproducible call by call, not per request as with vLLM.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from aerplane.generation.backends import base
from aerplane.generation.backends.base import Backend, BackendError, GenerationRequest, Result, Sample

log = logging.getLogger(__name__)

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


class TransformersBackend(Backend):
    name = "transformers"

    def __init__(
        self,
        model_path: Path,
        *,
        dtype: str = "float32",
        logprobs_mode: str = "processed",
        max_batch_tokens: int = 65536,
        seed: int = 0,
        device: str | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if logprobs_mode not in ("raw", "processed"):
            raise ValueError(f"logprobs_mode: must be raw or processed, got {logprobs_mode!r}")
        self.model_path = Path(model_path)
        self.logprobs_mode = logprobs_mode
        self.max_batch_tokens = max_batch_tokens
        self._seed = seed
        self._lock = threading.Lock()  # generate and load_weights never overlap
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = getattr(torch, _DTYPES[dtype])
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_path))
        self.model = AutoModelForCausalLM.from_pretrained(str(self.model_path), dtype=self.dtype).to(self.device)
        self.model.eval()
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids = {eos} if isinstance(eos, int) else set(eos or ())
        if not self.eos_ids:
            raise BackendError(f"{self.model_path}: no eos_token_id in generation_config.json or the tokenizer")
        pad = self.model.generation_config.pad_token_id
        self.pad_id = pad if pad is not None else min(self.eos_ids)
        self._max_len = int(getattr(self.model.config, "max_position_embeddings", 0) or 1 << 20)

    @property
    def max_model_len(self) -> int:
        return self._max_len

    def ready(self) -> tuple[bool, dict[str, Any]]:
        return True, {"device": str(self.device), "dtype": str(self.dtype).removeprefix("torch.")}

    # --- sampling ---------------------------------------------------------------------------------------------------

    def generate_waves(self, requests: Sequence[GenerationRequest]) -> Iterator[list[tuple[int, Result]]]:
        """Requests of one sampling setting run in chunks of `max_batch_tokens`; a wave is one chunk (one
        `generate` call), or one refused request."""
        groups: dict[tuple[float, float, int], list[int]] = {}
        for i, req in enumerate(requests):
            req.params.validate()
            total = len(req.prompt_token_ids) + req.params.max_tokens
            if not req.prompt_token_ids:
                yield [(i, base.RequestRejected("empty prompt"))]
                continue
            if total > self._max_len:
                refusal = f"prompt + max_tokens = {total} exceeds the model's {self._max_len} positions"
                yield [(i, base.RequestRejected(refusal))]
                continue
            key = (float(req.params.temperature), float(req.params.top_p), int(req.params.max_tokens))
            groups.setdefault(key, []).append(i)
        for (temperature, top_p, max_tokens), indices in groups.items():
            for chunk in self._chunks(requests, indices, max_tokens):
                try:
                    with self._lock:
                        results = self._generate_chunk([requests[i] for i in chunk], temperature, top_p, max_tokens)
                except Exception as exc:  # one failed call fails its requests, not the whole batch
                    log.exception("generate() failed for %d requests", len(chunk))
                    err = BackendError(f"transformers generate failed: {type(exc).__name__}: {exc}")
                    yield [(i, err) for i in chunk]
                    continue
                yield list(zip(chunk, results, strict=True))

    def _chunks(
        self, requests: Sequence[GenerationRequest], indices: list[int], max_tokens: int
    ) -> Iterator[list[int]]:
        chunk: list[int] = []
        cost = 0
        for i in indices:
            req = requests[i]
            c = req.params.n * (len(req.prompt_token_ids) + max_tokens)
            if chunk and cost + c > self.max_batch_tokens:
                yield chunk
                chunk, cost = [], 0
            chunk.append(i)
            cost += c
        if chunk:
            yield chunk

    def _generate_chunk(
        self, reqs: list[GenerationRequest], temperature: float, top_p: float, max_tokens: int
    ) -> list[list[Sample]]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        prompts = [r.prompt_token_ids for r in reqs for _ in range(r.params.n)]
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, p in enumerate(prompts):  # left padding: every prompt ends where generation starts
            input_ids[row, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            attention[row, width - len(p) :] = 1
        greedy = temperature == 0
        # Temperature and top-p are applied by the recorder (transformers' own warpers stay off: top_k=0 too, or it
        # would apply top-k 50), so the distribution sampled from is exactly the one whose logprobs are recorded.
        config = GenerationConfig(
            do_sample=not greedy,
            temperature=None,
            top_p=None,
            top_k=None if greedy else 0,
            max_new_tokens=max_tokens,
            eos_token_id=sorted(self.eos_ids),
            pad_token_id=self.pad_id,
        )
        recorder = _LogprobRecorder(temperature, top_p, processed=self.logprobs_mode == "processed")
        seed = next((r.params.seed for r in reqs if r.params.seed is not None), None)
        if seed is None:
            seed, self._seed = self._seed, self._seed + 1
        torch.manual_seed(seed)
        with torch.no_grad():
            sequences = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=attention.to(self.device),
                generation_config=config,
                logits_processor=LogitsProcessorList([recorder]),
            )
        generated = sequences[:, width:].cpu()
        logprobs = recorder.finish(sequences).cpu()  # (batch, steps)
        samples = [self._sample(generated[row], logprobs[row]) for row in range(len(prompts))]
        out_groups, pos = [], 0
        for r in reqs:
            out_groups.append(samples[pos : pos + r.params.n])
            pos += r.params.n
        return out_groups

    def _sample(self, tokens: Any, logprobs: Any) -> Sample:
        ids = tokens.tolist()
        end = next((k for k, t in enumerate(ids) if t in self.eos_ids), None)
        if end is None:
            finish = "length"
        else:
            ids, finish = ids[: end + 1], "stop"
        lps = logprobs[: len(ids)].tolist()
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return Sample(token_ids=ids, text=text, logprobs=lps, finish_reason=finish)

    # --- weights ----------------------------------------------------------------------------------------------------

    def load_weights(self, path: Path) -> None:
        import torch
        from safetensors.torch import load_file

        files = base.checkpoint_files(Path(path))
        params = dict(self.model.named_parameters())
        # remove_duplicate=False: a tied lm_head.weight in the checkpoint lands on the shared embedding tensor.
        targets = {**dict(self.model.named_buffers()), **dict(self.model.named_parameters(remove_duplicate=False))}
        tied = {"lm_head.weight"} if getattr(self.model.config, "tie_word_embeddings", False) else set()
        state: dict[str, Any] = {}
        for file in files:  # validate everything before touching the model: a bad checkpoint changes nothing
            for name, tensor in load_file(str(file)).items():
                target = targets.get(name)
                if target is None:
                    raise BackendError(f"{file}: tensor {name!r} is not a parameter of the model")
                if tuple(target.shape) != tuple(tensor.shape):
                    raise BackendError(
                        f"{file}: {name} has shape {tuple(tensor.shape)}, the model {tuple(target.shape)}"
                    )
                state[name] = tensor
        missing = set(params) - set(state) - tied
        if missing:
            raise BackendError(f"{path}: checkpoint lacks {len(missing)} parameters, e.g. {sorted(missing)[:3]}")
        with self._lock, torch.no_grad():
            for name, tensor in state.items():
                target = targets[name]
                target.copy_(tensor.to(dtype=target.dtype, device=target.device))


class _LogprobRecorder:
    """A logits processor that applies temperature / top-p itself and records each sampled token's logprob.

    At step t it keeps log_softmax of the step's (raw or processed) logits; at step t + 1 the token sampled at t is
    the last column of `input_ids`, so only one (batch, vocab) tensor is alive at a time — never the whole
    (batch, steps, vocab) history that `output_logits` / `output_scores` would hold.
    """

    def __init__(self, temperature: float, top_p: float, *, processed: bool) -> None:
        self.temperature = temperature
        self.top_p = top_p
        self.processed = processed
        self._last: Any = None  # log-probs of the previous step, (batch, vocab)
        self._picked: list[Any] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self._last is not None:
            self._picked.append(self._last.gather(-1, input_ids[:, -1:]).squeeze(-1))
        raw = scores.float()
        out = raw
        if self.temperature > 0:
            out = raw / self.temperature
            if self.top_p < 1:
                out = _top_p_mask(out, self.top_p)
        self._last = torch.log_softmax(out if self.processed else raw, dim=-1)
        return out

    def finish(self, sequences: Any) -> Any:
        import torch

        if self._last is not None:
            self._picked.append(self._last.gather(-1, sequences[:, -1:]).squeeze(-1))
            self._last = None
        return torch.stack(self._picked, dim=1)


def _top_p_mask(logits: Any, top_p: float) -> Any:
    """Keep the smallest set of tokens whose probability reaches `top_p` (at least one); mask the rest to -inf."""
    import torch

    sorted_logits, order = torch.sort(logits, descending=False, dim=-1)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = cumulative <= (1 - top_p)
    drop_sorted[..., -1:] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))
