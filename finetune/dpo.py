"""Direct preference optimisation: learn from preference pairs without a reward model or sampling.

DPO (Rafailov et al., 2023) shows that the policy that PPO's KL-penalised objective is after
defines its own reward, ``beta * log(pi(y | x) / pi_ref(y | x))``, so the Bradley-Terry loss can be
put on the policy directly:

    loss = -log sigmoid(beta * ((log pi(chosen) - log pi_ref(chosen)) - (log pi(rejected) - log pi_ref(rejected))))

with log-probabilities summed over the response tokens. At the start (policy = reference) the
loss is log 2. `beta` plays the KL coefficient's part: larger keeps the policy closer to the
reference. Logged: the loss, the implicit reward accuracy (share of pairs whose chosen
response gets the larger implicit reward) and margin, on training batches and held-out pairs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from nanolens.models import GPT
from nanolens.training import TrainConfig, resolve_device

from .data import TEMPLATE_KEY, Preference, PreferenceExample, Template, encode_preferences, pad, split_examples
from .loop import RunLog, fit, plot_curves, write_summary
from .policy import count_tokens, frozen_copy, response_logprobs


def dpo_loss(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor,
             beta: float = 0.1) -> tuple[Tensor, Tensor, Tensor]:
    """(mean loss, implicit rewards of the chosen and of the rejected responses [batch])."""
    chosen = beta * (policy_chosen - ref_chosen)
    rejected = beta * (policy_rejected - ref_rejected)
    return -F.logsigmoid(chosen - rejected).mean(), chosen.detach(), rejected.detach()


def pair_logprobs(model: GPT, examples: Sequence[PreferenceExample]) -> tuple[Tensor, Tensor]:
    """Summed log-probabilities of the chosen and of the rejected responses [batch], one pass."""
    seqs = [e.prompt + e.chosen for e in examples] + [e.prompt + e.rejected for e in examples]
    tokens, lengths = pad(seqs, model.device)
    prompt_lens = torch.tensor([len(e.prompt) for e in examples] * 2, device=model.device)
    logprobs, _ = response_logprobs(model, tokens, prompt_lens, lengths)
    total = logprobs.sum(1)
    return total[: len(examples)], total[len(examples) :]


@torch.no_grad()
def reference_logprobs(model: GPT, examples: Sequence[PreferenceExample], batch_size: int = 64) -> tuple[Tensor, Tensor]:
    """`pair_logprobs` of the frozen reference for every pair, computed once before training."""
    parts = [pair_logprobs(model, examples[k : k + batch_size]) for k in range(0, len(examples), batch_size)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def train_dpo(
    policy: GPT,
    preferences: Sequence[Preference],
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    *,
    beta: float = 0.1,
    template: Template | str | None = None,
    reference: "GPT | None" = None,
    callbacks: Iterable[Callable[[dict[str, Any]], Any]] = (),
) -> tuple[GPT, dict[str, Any]]:
    """Train a copy of `policy` with DPO on preference pairs, against a frozen `reference`
    (default: `policy` as given). `config`: a TrainConfig (max_iters, batch_size of pairs,
    learning_rate, eval_interval, val_fraction, device, progress). Writes `out_dir/last/` (the
    policy, its template in the config), metrics.jsonl, dpo_curves.png and summary.json.
    Returns (the trained policy, summary)."""
    config = config or TrainConfig(max_iters=200, learning_rate=1e-4, min_lr=1e-5, warmup_iters=10, eval_interval=50)
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    template = Template.named(template) if template is not None else Template.of(policy)
    examples = encode_preferences(preferences, policy.tokenizer, template, policy.config.block_size)
    train, val = split_examples(examples, config.val_fraction, config.seed)
    device = resolve_device(config.device)
    model = copy.deepcopy(policy).to(device)
    model.config.extra = {**model.config.extra, TEMPLATE_KEY: template.text}
    ref = frozen_copy(reference if reference is not None else policy).to(device)
    log = RunLog(out_dir, config.max_iters, "dpo", config.progress, callbacks)

    def losses(batch: Sequence[PreferenceExample], ref_c: Tensor, ref_r: Tensor) -> tuple[Tensor, dict[str, float]]:
        pi_c, pi_r = pair_logprobs(model, batch)
        loss, chosen, rejected = dpo_loss(pi_c, pi_r, ref_c, ref_r, beta)
        return loss, {"accuracy": float((chosen > rejected).float().mean()), "margin": float((chosen - rejected).mean())}

    try:
        with count_tokens(model, ref) as count:
            ref_train, ref_val = reference_logprobs(ref, train), reference_logprobs(ref, val)

            def batch_loss(indices: list[int]) -> tuple[Tensor, dict[str, float]]:
                idx = torch.tensor(indices, device=device)
                return losses([train[i] for i in indices], ref_train[0][idx], ref_train[1][idx])

            def evaluate(chunk: int = 64) -> dict[str, float]:
                totals = {"loss": 0.0, "accuracy": 0.0, "margin": 0.0}
                for k in range(0, len(val), chunk):
                    loss, stats = losses(val[k : k + chunk], ref_val[0][k : k + chunk], ref_val[1][k : k + chunk])
                    for key, value in {"loss": float(loss), **stats}.items():
                        totals[key] += value * len(val[k : k + chunk])
                return {f"val_{k}": v / len(val) for k, v in totals.items()}

            fit(model, batch_loss, len(train), config, log, evaluate, postfix=("loss", "val_accuracy"), stream="dpo")
    finally:
        log.close()
    final = next(r for r in reversed(log.records) if r["kind"] == "eval")
    summary = {"method": "dpo", "seconds": round(log.elapsed, 3), "tokens": count.tokens, "iters": config.max_iters,
               "beta": beta, "template": template.text, "train_pairs": len(train), "val_pairs": len(val),
               **{k: final[k] for k in ("val_loss", "val_accuracy", "val_margin")}}
    if out_dir is not None:
        model.save(Path(out_dir) / "last")
        plot_curves(log.records, [("DPO loss", ["loss", "val_loss"]), ("implicit reward accuracy", ["accuracy", "val_accuracy"])],
                    Path(out_dir) / "dpo_curves.png", title=f"DPO (beta {beta:g})")
    return model, write_summary(out_dir, summary)
