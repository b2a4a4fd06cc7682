"""A policy's view of (prompt, response) rows: log-probabilities of the response tokens,
sampled responses cut at the template's end marker, frozen reference copies, and the compute
(token positions through forward passes) a method spends."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from nanolens.models import GPT

from .data import Template, pad

def forward_with_hidden(model: GPT, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """(logits [batch, pos, vocab], the final residual after ln_final [batch, pos, d_model])."""
    hidden = model.ln_final(model(tokens, stop_at_layer=model.config.n_layer))
    return model.unembed(hidden), hidden


def token_logprobs(logits: Tensor, tokens: Tensor) -> Tensor:
    """log p(tokens[:, t + 1] | tokens[:, : t + 1]) for every t: [batch, pos - 1]."""
    return torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, tokens[:, 1:, None]).squeeze(-1)


def response_view(values: Tensor, prompt_lens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Per-position values [batch, pos - 1] (position t predicts token t + 1), gathered at each
    row's response tokens and left-aligned: ([batch, longest response], mask)."""
    resp_lens = lengths - prompt_lens
    width = max(int(resp_lens.max()), 1)
    steps = torch.arange(width, device=values.device)
    index = (prompt_lens[:, None] - 1 + steps[None]).clamp(max=values.shape[1] - 1)
    mask = (steps[None] < resp_lens[:, None]).to(values.dtype)
    return values.gather(1, index) * mask, mask


def response_logprobs(model: GPT, tokens: Tensor, prompt_lens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Log-probabilities of each row's response tokens: ([batch, longest response], mask)."""
    return response_view(token_logprobs(model(tokens), tokens), prompt_lens, lengths)


class Rollouts(NamedTuple):
    tokens: Tensor  # [rows, pos], right-padded: formatted prompt, response, end marker
    prompt_lens: Tensor
    lengths: Tensor
    prompts: list[str]
    responses: list[str]  # the text before the end marker
    ended: list[bool]  # whether the end marker was produced


def cut_response(tokenizer: Any, ids: list[int], template: Template) -> tuple[list[int], str, bool]:
    """(the response's ids through the end marker, its text before the marker, marker found)."""
    text, ended = template.cut(tokenizer.decode(ids))
    if not ended:
        return ids, text, False
    n = next(n for n in range(1, len(ids) + 1) if template.end in tokenizer.decode(ids[:n]))
    return ids[:n], text, True


@torch.no_grad()
def sample_responses(model: GPT, prompts: Sequence[str], template: Template, samples: int, max_new_tokens: int,
                     temperature: float = 1.0, top_k: int | None = None, seed: int = 0, steering: Any = None) -> Rollouts:
    """`samples` responses to each prompt (formatted with `template`), cut after the end marker."""
    tok, block = model.tokenizer, model.config.block_size
    seqs, prompt_lens, kept_prompts, responses, ended = [], [], [], [], []
    for j, prompt in enumerate(prompts):
        ids = tok.encode(template.format_prompt(prompt))
        room = min(max_new_tokens, block - len(ids))
        if room < 1:
            raise ValueError(f"the prompt {prompt!r} is {len(ids)} tokens formatted, which leaves no room in the "
                             f"context (block_size={block}); shorten it")
        out = model.generate(torch.tensor([ids] * samples, device=model.device), max_new_tokens=room,
                             temperature=temperature, top_k=top_k, seed=seed + 7919 * j, stop=template.end or None,
                             steering=steering)
        for row in out[:, len(ids):].tolist():
            resp_ids, text, done = cut_response(tok, row, template)
            seqs.append(ids + resp_ids)
            prompt_lens.append(len(ids))
            kept_prompts.append(prompt)
            responses.append(text)
            ended.append(done)
    tokens, lengths = pad(seqs, model.device)
    return Rollouts(tokens, torch.tensor(prompt_lens, device=model.device), lengths, kept_prompts, responses, ended)


def frozen_copy(model: nn.Module) -> nn.Module:
    """A copy that never trains: the reference model of PPO and DPO."""
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


class TokenCount:
    tokens: int = 0


@contextmanager
def count_tokens(*models: nn.Module) -> Iterator[TokenCount]:
    """Count the token positions every forward pass of `models` processes (rows x positions;
    one per row per step of KV-cached generation): the compute a method spends."""
    count = TokenCount()

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        x = args[0] if args else kwargs.get("input")
        if isinstance(x, Tensor):
            count.tokens += x.numel()

    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in models]
    try:
        yield count
    finally:
        for h in handles:
            h.remove()
