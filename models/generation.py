"""Sampling from a GPT: KV cache, temperature, top-k, top-p, seed, stop string, streaming, hooks.

With the KV cache, the prompt is run once and then each step passes only the newest token, so
hooks see activations of shape [batch, 1, ...] after the first step. When the text outgrows the
context (`block_size`), the window is cropped to its last `block_size` tokens and the cache is
rebuilt from that window, so cached and uncached generation give the same tokens.

Interventions wrap the model; the model never imports them. `generate(steering=...)` takes any
`Intervention`: an object whose `applied(model)` is a context manager attaching its hooks for
the whole generation (a `nanolens.steering.Steering`, or a `SteeringVector`). Packages above
may teach it other spellings with `register_intervention_adapter` (steering adds its dict and
list forms). Generation announces where each forward pass sits in the text (`current_step`),
which is how steering knows the prompt from the generated tokens under the KV cache.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .gpt import GPT

# Where the forward pass that generation is running sits in the text: (model id, text position
# of its first input token, prompt length). Steering reads it so that "prompt", "generated" and
# "first k positions" mean the same with and without the KV cache (nanolens.steering.apply).
_STEP: ContextVar[tuple[int, int, int] | None] = ContextVar("nanolens_generation_step", default=None)


def current_step(model: "GPT") -> tuple[int, int] | None:
    """(text position of the first input token, prompt length) of the generation step that
    `model` is running now, or None outside `generate`."""
    step = _STEP.get()
    return step[1:] if step is not None and step[0] == id(model) else None


@runtime_checkable
class Intervention(Protocol):
    """What `generate(steering=...)` accepts: it attaches its hooks to `model` while applied
    (and may check it first with `validate(model)`, called at the call of `generate_stream`)."""

    def applied(self, model: "GPT") -> AbstractContextManager[Any]: ...


# Adapters from other spellings (a dict of settings, a list of vectors) to an Intervention,
# registered by the packages that define them; each returns None for what it does not know.
_ADAPTERS: list[Callable[[Any], Intervention | None]] = []


def register_intervention_adapter(adapter: Callable[[Any], Intervention | None]) -> None:
    """Let `generate(steering=x)` accept `x` when `adapter(x)` turns it into an Intervention."""
    if adapter not in _ADAPTERS:
        _ADAPTERS.append(adapter)


def as_intervention(steering: Any) -> Intervention:
    """`steering` as an Intervention, or a TypeError naming what is accepted."""
    if isinstance(steering, Intervention):
        return steering
    for adapt in _ADAPTERS:
        found = adapt(steering)
        if found is not None:
            return found
    raise TypeError(
        f"steering={type(steering).__name__!r} is not an intervention: give a nanolens.steering.Steering, a "
        "SteeringVector, or any object with an applied(model) context manager"
    )


def _applied(model: "GPT", steering: Any) -> AbstractContextManager[Any]:
    return nullcontext() if steering is None else as_intervention(steering).applied(model)


def sample_next(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Pick one id per row of `logits` [batch, vocab]; temperature 0 means greedy (argmax)."""
    # -inf marks a banned token (a logit bias may set it); NaN, +inf or a row of only -inf is broken
    if bool((torch.isnan(logits) | torch.isposinf(logits)).any() | torch.isneginf(logits).all(-1).any()):
        raise ValueError(
            "the model's logits hold NaN or inf, so there is nothing to sample from: its weights are broken (a "
            "diverged training run?) or a hook or steering added non-finite values; load a finite checkpoint"
        )
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = cumulative - sorted_logits.softmax(-1) >= top_p  # keep the first token always
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _validate(max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None) -> None:
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 (or None for no limit), got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def _prompt_tokens(model: "GPT", input: Tensor | str | Sequence[str]) -> Tensor:
    tokens = model._as_tokens(input)
    if tokens.shape[1] == 0:
        raise ValueError("the prompt is empty; give at least one token (e.g. a newline) to start from")
    return tokens


def stream_tokens(
    model: "GPT",
    tokens: Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    use_kv_cache: bool = True,
) -> Iterator[Tensor]:
    """Yield the next token ids [batch] one step at a time (hooks attached by the caller apply).

    The model runs under `torch.inference_mode()`: a one-token step is a few dozen tiny ops, and
    skipping autograd's bookkeeping makes it ~10% faster than under `no_grad`. Activations that
    hooks see are therefore inference tensors (`.clone()` one outside to use it with autograd);
    the ids yielded are ordinary tensors."""
    _validate(max_new_tokens, temperature, top_k, top_p)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=tokens.device).manual_seed(seed)
    block = model.config.block_size
    # The cache holds only what this generation can reach: a model whose context is 128k
    # positions (Llama 3) must not preallocate keys and values for all of them.
    capacity = min(block, tokens.shape[1] + max_new_tokens)
    seq = tokens
    cache = None
    for _ in range(max_new_tokens):
        if not use_kv_cache:
            window, kw = seq[:, -block:], {}
        elif cache is None or seq.shape[1] > block:
            cache = model.new_kv_cache(capacity)
            window, kw = seq[:, -block:], {"kv_cache": cache}  # (re)fill the cache from the window
        else:
            window, kw = seq[:, cache.length :], {"kv_cache": cache}
        announced = _STEP.set((id(model), seq.shape[1] - window.shape[1], tokens.shape[1]))
        try:
            with torch.inference_mode():
                logits = model(window, **kw)
                next_ids = sample_next(logits[:, -1], temperature, top_k, top_p, generator)
        finally:
            _STEP.reset(announced)
        next_ids = next_ids.clone()  # outside inference mode: an ordinary tensor
        seq = torch.cat([seq, next_ids.unsqueeze(1)], dim=1)
        yield next_ids


def _stop_in_tail(model: "GPT", new: list[Tensor], stop: str) -> Tensor:
    """Per row: does the text of the last len(stop) new tokens contain `stop`?"""
    tail = torch.stack(new[-len(stop) :], dim=1)
    return torch.tensor([stop in model.tokenizer.decode(row.tolist()) for row in tail])


def _decode_until_stop(model: "GPT", ids: list[int], stop: str | None) -> tuple[str, bool]:
    text = model.tokenizer.decode(ids)
    if stop and stop in text:
        return text[: text.index(stop)], True
    return text, False


def generate(
    model: "GPT",
    input: Tensor | str | Sequence[str],
    max_new_tokens: int = 100,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop: str | None = None,
    use_kv_cache: bool = True,
    fwd_hooks: Sequence[tuple[Any, Any]] = (),
    steering: Any = None,
) -> Tensor | str | list[str]:
    """Continue `input` by up to `max_new_tokens` tokens.

    Token input returns ids [batch, pos + new]; text input returns the prompt plus its
    continuation, cut before `stop` when that string appears (generation ends once every row
    has produced it). `fwd_hooks` are attached for the whole generation, as in `run_with_hooks`.
    `steering`: an `Intervention` (a `nanolens.steering.Steering`, a SteeringVector, ...) applied
    to every step, KV cache included; a Steering's `.last_report` afterwards counts the
    positions it touched.
    """
    if stop is not None and model.tokenizer is None:
        raise ValueError("a stop string needs a tokenizer to decode the generated text")
    tokens = _prompt_tokens(model, input)
    was_training = model.training
    model.eval()
    new: list[Tensor] = []
    done = torch.zeros(tokens.shape[0], dtype=torch.bool)
    try:
        with model.hooks(fwd_hooks=list(fwd_hooks)), _applied(model, steering):
            for next_ids in stream_tokens(model, tokens, max_new_tokens, temperature, top_k, top_p, seed, use_kv_cache):
                new.append(next_ids)
                if stop:
                    done |= _stop_in_tail(model, new, stop)
                    if bool(done.all()):
                        break
    finally:
        model.train(was_training)
    out = torch.cat([tokens, torch.stack(new, dim=1)], dim=1) if new else tokens
    if isinstance(input, Tensor):
        return out
    prompt_len = tokens.shape[1]
    bos = len(model.bos_tokens(None))  # a BOS that to_tokens prepended is not part of the text
    texts = []
    for row in out:
        continuation, _ = _decode_until_stop(model, row[prompt_len:].tolist(), stop)
        texts.append(model.tokenizer.decode(row[bos:prompt_len].tolist()) + continuation)
    return texts[0] if isinstance(input, str) else texts


def generate_stream(
    model: "GPT",
    input: Tensor | str,
    max_new_tokens: int = 100,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop: str | None = None,
    use_kv_cache: bool = True,
    fwd_hooks: Sequence[tuple[Any, Any]] = (),
    steering: Any = None,
) -> Iterator[str | Tensor]:
    """Yield each new piece as soon as it is sampled: text pieces for a text prompt (one
    prompt), token ids [batch] for token input. For live display in a terminal or an app.

    The pieces join to exactly what `generate` adds for the same arguments: text that might be
    the start of `stop` is held back until the next token shows whether it is. Impossible
    requests raise here, at the call, not at the first `next()`."""
    _validate(max_new_tokens, temperature, top_k, top_p)
    if stop is not None and model.tokenizer is None:
        raise ValueError("a stop string needs a tokenizer to decode the generated text")
    tokens = _prompt_tokens(model, input)
    as_text = isinstance(input, str)
    if as_text and tokens.shape[0] != 1:
        raise ValueError("generate_stream streams text for one prompt at a time")
    if steering is not None:
        steering = as_intervention(steering)  # a bad steering raises here, at the call
        if hasattr(steering, "validate"):
            steering.validate(model)
    return _stream(model, tokens, as_text, max_new_tokens, temperature, top_k, top_p, seed, stop, use_kv_cache, fwd_hooks, steering)


def _stop_prefix_length(text: str, stop: str | None) -> int:
    """Length of the longest end of `text` that is a proper prefix of `stop` (0 if none)."""
    if not stop:
        return 0
    return next((k for k in range(min(len(stop) - 1, len(text)), 0, -1) if text.endswith(stop[:k])), 0)


def _stream(model, tokens, as_text, max_new_tokens, temperature, top_k, top_p, seed, stop, use_kv_cache, fwd_hooks, steering=None):
    was_training = model.training
    model.eval()
    generated: list[int] = []
    emitted = ""
    text = ""
    new: list[Tensor] = []
    done = torch.zeros(tokens.shape[0], dtype=torch.bool)
    try:
        with model.hooks(fwd_hooks=list(fwd_hooks)), _applied(model, steering):
            for next_ids in stream_tokens(model, tokens, max_new_tokens, temperature, top_k, top_p, seed, use_kv_cache):
                if not as_text:
                    yield next_ids
                    if stop:  # as generate(): end once every row has produced the stop string
                        new.append(next_ids)
                        done |= _stop_in_tail(model, new, stop)
                        if bool(done.all()):
                            return
                    continue
                generated.append(int(next_ids[0]))
                text, stopped = _decode_until_stop(model, generated, stop)
                safe = text if stopped else text[: len(text) - _stop_prefix_length(text, stop)]
                if len(safe) > len(emitted):
                    yield safe[len(emitted) :]
                    emitted = safe
                if stopped:
                    return
        if len(text) > len(emitted):  # the held-back end never became the stop string
            yield text[len(emitted) :]
    finally:
        model.train(was_training)
