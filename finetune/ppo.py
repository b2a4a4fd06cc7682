"""PPO against a reward, with a KL penalty to the starting model: the standard RLHF recipe.

Each step:

1. **Rollouts.** The policy samples `samples_per_prompt` responses to each of
   `prompts_per_step` prompts (KV-cached generation), each cut after the template's end marker.
2. **Scores.** The reward (a `RewardModel`, or any function text -> float, e.g. the word-count
   sentiment scorer) scores each response. A NaN or infinite score is an error naming the sample.
3. **Per-token rewards.** One forward pass each of the policy (log-probabilities and the value
   head's estimates) and of the frozen reference gives the per-token KL estimate
   ``log pi(token) - log pi_ref(token)``; each token's reward is ``-kl_coef * KL``, and the last
   token also gets the score. The penalty keeps the policy near the model it started from, so it
   cannot drift into text the reward model was never trained to judge.
4. **Advantages.** Generalised advantage estimation (`gae`) over the response tokens, whitened.
5. **Updates.** `ppo_epochs` passes over the rollouts in minibatches: the clipped surrogate
   ``max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps))`` plus the clipped value loss.

The policy is a copy of the model given (the SFT or the base model), with a value head on its
final residual; the reference is a frozen copy. The run directory gets ``metrics.jsonl`` (one
record per step: mean score, KL, positive fraction, a sample, the losses), ``ppo_curves.png``
(reward and KL against the step), ``last/`` (the policy as a GPT checkpoint) and
``summary.json``. Progress shows on a tqdm bar as in pre-training.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from nanolens.models import GPT, ConfigError
from nanolens.training import TrainConfig
from nanolens.training.runtime import resolve_device, stream_seed
from nanolens.training.trainer import configure_optimizer

from .data import TEMPLATE_KEY, Template
from .loop import RunLog, plot_curves, write_summary
from .policy import count_tokens, forward_with_hidden, frozen_copy, response_view, sample_responses, token_logprobs
from .reward import RewardModel

RewardLike = RewardModel | Callable[[str], float]


class RewardError(ValueError):
    """The reward function returned something PPO cannot learn from (NaN, infinite, not a number)."""


@dataclass
class PPOConfig:
    """PPO's settings. Defaults follow common RLHF practice (gamma 1, lambda 0.95, clip 0.2,
    whitened advantages, 4 epochs per batch) at this toolkit's small scale."""

    steps: int = 100  # rollout + update rounds
    prompts_per_step: int = 8
    samples_per_prompt: int = 4
    max_new_tokens: int = 64  # per response (less when the prompt leaves less room in the context)
    temperature: float = 1.0  # PPO's ratios assume samples from the policy itself: keep 1.0
    top_k: int | None = None
    kl_coef: float = 0.05  # beta: the per-token KL penalty
    gamma: float = 1.0
    lam: float = 0.95
    clip_range: float = 0.2
    clip_range_value: float = 0.2
    vf_coef: float = 0.1
    ppo_epochs: int = 4
    minibatch_size: int = 16  # rollouts per gradient step
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    whiten_advantages: bool = True
    sample_interval: int = 10  # print a sample every this many steps (0: never)
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    verbose: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "prompts_per_step", "samples_per_prompt", "max_new_tokens", "ppo_epochs", "minibatch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "steps" else 1):
                raise ConfigError(f"PPO {name} must be a positive integer, got {value!r}")
        for name in ("kl_coef", "clip_range", "clip_range_value", "vf_coef", "learning_rate", "weight_decay", "max_grad_norm"):
            if not (isinstance(getattr(self, name), (int, float)) and getattr(self, name) >= 0):
                raise ConfigError(f"PPO {name} must be a number >= 0, got {getattr(self, name)!r}")
        if not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1):
            raise ConfigError(f"gamma and lam must lie in [0, 1], got {self.gamma} and {self.lam}")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0 (PPO samples), got {self.temperature}")


# ---------------------------------------------------------------------------------------------
# the pieces
# ---------------------------------------------------------------------------------------------
def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over left-aligned response tokens [batch, steps].

    delta_t = r_t + gamma * V_{t+1} - V_t (V after a row's last token is 0: the episode ends),
    A_t = delta_t + gamma * lam * A_{t+1}; returns (advantages, returns = advantages + values),
    zero where `mask` is 0."""
    steps = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(steps)):
        going_on = mask[:, t + 1] if t + 1 < steps else torch.zeros_like(last)
        next_value = values[:, t + 1] * going_on if t + 1 < steps else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last * going_on) * mask[:, t]
        advantages[:, t] = last
    return advantages, (advantages + values) * mask


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def whiten(x: Tensor, mask: Tensor) -> Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


def policy_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip_range: float) -> tuple[Tensor, Tensor]:
    """PPO's clipped surrogate, masked mean; and the share of tokens where the clip was active."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped, clipped = -advantages * ratio, -advantages * ratio.clamp(1 - clip_range, 1 + clip_range)
    return masked_mean(torch.maximum(unclipped, clipped), mask), masked_mean((clipped > unclipped).float(), mask)


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip_range: float) -> Tensor:
    """Half the squared error to the returns, the worse of the plain and the clipped estimate."""
    clipped = old_values + (values - old_values).clamp(-clip_range, clip_range)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)


class ValueHead(nn.Module):
    """A linear read-out of the final residual: the expected return from each position on."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.proj(hidden.float()).squeeze(-1)


def check_rewards(scores: Sequence[Any], prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """The scores as floats; a NaN, infinite or non-numeric one raises RewardError naming the sample."""
    out = []
    for score, prompt, response in zip(scores, prompts, responses):
        try:
            value = float(score)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            raise RewardError(
                f"the reward function returned {score!r} for the prompt {prompt!r} and the sample {response!r}; "
                "it must return a finite number for every text (e.g. 0.0 for one it cannot score)"
            )
        out.append(value)
    return out


def reward_function(reward: RewardLike) -> Callable[[list[str], list[str]], list[float]]:
    """(prompts, responses) -> scores: a RewardModel reads both (with its own template); a plain
    function scores the response text alone."""
    if isinstance(reward, RewardModel):
        return reward.score
    if callable(reward):
        return lambda prompts, responses: [reward(r) for r in responses]
    raise TypeError(f"reward must be a RewardModel or a function text -> float, got {type(reward).__name__}")


# ---------------------------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------------------------
class PPOTrainer:
    """PPO for `policy` (copied; the copy trains) against `reward`, near a frozen `reference`
    (default: a copy of `policy` as given). `metric`: a text scorer whose > 0 share is logged
    as the positive fraction (default: the reward itself)."""

    def __init__(self, policy: GPT, reward: RewardLike, prompts: Sequence[str], config: PPOConfig | None = None,
                 out_dir: str | Path | None = None, *, template: Template | str | None = None, reference: "GPT | None" = None,
                 metric: Callable[[str], float] | None = None, callbacks: Iterable[Callable[[dict[str, Any]], Any]] = ()) -> None:
        self.config = cfg = config or PPOConfig()
        if not prompts:
            raise ValueError("PPO needs prompts to sample responses to; give at least one")
        if policy.tokenizer is None:
            raise ValueError("PPO needs the policy's tokenizer; load the model with GPT.load")
        self.device = resolve_device(cfg.device)
        self.template = Template.named(template) if template is not None else Template.of(policy)
        self.template.check(policy.tokenizer)
        self.policy = copy.deepcopy(policy).to(self.device).eval()  # eval: no dropout in rollouts or updates
        self.policy.config.extra = {**self.policy.config.extra, TEMPLATE_KEY: self.template.text}
        self.value_head = ValueHead(policy.config.n_embd).to(self.device)
        self.reference = frozen_copy(reference if reference is not None else policy).to(self.device)
        self.reward_model = reward.to(self.device).eval() if isinstance(reward, RewardModel) else None
        self.reward = reward_function(reward)
        self.metric = metric
        self.prompts = list(prompts)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.callbacks = list(callbacks)
        optim = TrainConfig(learning_rate=cfg.learning_rate, min_lr=0.0, weight_decay=cfg.weight_decay)
        self.optimizer = configure_optimizer(nn.ModuleList([self.policy, self.value_head]), optim, torch.device(self.device).type)
        self.params = list(self.policy.parameters()) + list(self.value_head.parameters())

    def _forward(self, tokens: Tensor, prompt_lens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(response log-probs, values, mask), each [rows, longest response]."""
        logits, hidden = forward_with_hidden(self.policy, tokens)
        logprobs, mask = response_view(token_logprobs(logits, tokens), prompt_lens, lengths)
        values, _ = response_view(self.value_head(hidden)[:, :-1], prompt_lens, lengths)
        return logprobs, values, mask

    def _prompts_for(self, step: int) -> list[str]:
        rng = random.Random(stream_seed(self.config.seed, "ppo-prompts", step))
        k = self.config.prompts_per_step
        return rng.sample(self.prompts, k) if k <= len(self.prompts) else rng.choices(self.prompts, k=k)

    @torch.no_grad()
    def make_experience(self, step: int) -> dict[str, Any]:
        """Rollouts, their scores, per-token rewards, advantages and returns for one step."""
        cfg = self.config
        r = sample_responses(self.policy, self._prompts_for(step), self.template, cfg.samples_per_prompt, cfg.max_new_tokens,
                             cfg.temperature, cfg.top_k, seed=stream_seed(cfg.seed, "ppo-rollout", step) % 2**62)
        scores = torch.tensor(check_rewards(self.reward(r.prompts, r.responses), r.prompts, r.responses), device=self.device)
        logprobs, values, mask = self._forward(r.tokens, r.prompt_lens, r.lengths)
        ref_logprobs, _ = response_view(token_logprobs(self.reference(r.tokens), r.tokens), r.prompt_lens, r.lengths)
        kl = (logprobs - ref_logprobs) * mask
        rewards = -cfg.kl_coef * kl
        last = (r.lengths - r.prompt_lens - 1).clamp(min=0)
        rewards[torch.arange(len(last), device=self.device), last] += scores
        advantages, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = whiten(advantages, mask)
        return {"rollouts": r, "scores": scores, "logprobs": logprobs, "values": values, "mask": mask,
                "advantages": advantages, "returns": returns, "kl": kl.sum(1)}

    def update(self, exp: dict[str, Any], step: int) -> dict[str, float]:
        """`ppo_epochs` passes of clipped policy + value updates over the step's rollouts."""
        cfg = self.config
        r = exp["rollouts"]
        rows = r.tokens.shape[0]
        generator = torch.Generator().manual_seed(stream_seed(cfg.seed, "ppo-minibatch", step))
        stats: dict[str, list[float]] = {"pg_loss": [], "vf_loss": [], "clipfrac": [], "approx_kl": []}
        for _ in range(cfg.ppo_epochs):
            for mb in torch.randperm(rows, generator=generator).to(self.device).split(cfg.minibatch_size):
                width = int(r.lengths[mb].max())
                logprobs, values, mask = self._forward(r.tokens[mb, :width], r.prompt_lens[mb], r.lengths[mb])
                steps = logprobs.shape[1]
                old_lp, old_v = exp["logprobs"][mb, :steps], exp["values"][mb, :steps]
                pg, clipfrac = policy_loss(logprobs, old_lp, exp["advantages"][mb, :steps], mask, cfg.clip_range)
                vf = value_loss(values, old_v, exp["returns"][mb, :steps], mask, cfg.clip_range_value)
                loss = pg + cfg.vf_coef * vf
                loss.backward()
                if cfg.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                for key, value in (("pg_loss", pg), ("vf_loss", vf), ("clipfrac", clipfrac),
                                   ("approx_kl", 0.5 * masked_mean((logprobs - old_lp) ** 2, mask))):
                    stats[key].append(value.item())
        return {k: sum(v) / len(v) for k, v in stats.items()}

    def train(self) -> tuple[GPT, dict[str, Any]]:
        """Run `steps` PPO steps; returns (the trained policy, summary). Writes the run directory."""
        cfg = self.config
        log = RunLog(self.out_dir, cfg.steps, "ppo", cfg.progress, self.callbacks)
        counted = [self.policy, self.reference] + ([self.reward_model.body] if self.reward_model is not None else [])
        try:
            with count_tokens(*counted) as count:
                for step in range(1, cfg.steps + 1):
                    if log.stop:
                        break
                    exp = self.make_experience(step)
                    stats = self.update(exp, step)
                    r = exp["rollouts"]
                    shown = [self.metric(t) for t in r.responses] if self.metric is not None else exp["scores"].tolist()
                    record = {
                        "kind": "step", "iter": step, "reward": float(exp["scores"].mean()), "kl": float(exp["kl"].mean()),
                        "frac_positive": sum(s > 0 for s in shown) / len(shown),
                        "response_tokens": float((r.lengths - r.prompt_lens).float().mean()),
                        "ended": sum(r.ended) / len(r.ended), **stats, "tokens": count.tokens,
                        "sample": self.template.format_prompt(r.prompts[0]) + r.responses[0],
                    }
                    log.bar.update(1)
                    log.emit(record, postfix=("reward", "kl", "frac_positive"))
                    if cfg.verbose and cfg.sample_interval and (step % cfg.sample_interval == 0 or step == cfg.steps):
                        log.bar.write(f"--- step {step}: reward {record['reward']:.3f}, KL {record['kl']:.3f} ---\n{record['sample']}\n---")
        finally:
            log.close()
        steps = [rec for rec in log.records if rec["kind"] == "step"]
        summary = {"method": "ppo", "seconds": round(log.elapsed, 3), "tokens": count.tokens, "steps": len(steps),
                   "template": self.template.text, "config": asdict(self.config),
                   "final": {k: steps[-1][k] for k in ("reward", "kl", "frac_positive")} if steps else {}}
        if self.out_dir is not None:
            self.policy.save(self.out_dir / "last")
            plot_curves(log.records, [("score", ["reward", "frac_positive"]), ("KL to the reference (nats per response)", ["kl"])],
                        self.out_dir / "ppo_curves.png", title="PPO: reward and KL per step", x="iter")
        return self.policy, write_summary(self.out_dir, summary)


def ppo(policy: GPT, reward: RewardLike, prompts: Sequence[str], config: PPOConfig | None = None,
        out_dir: str | Path | None = None, **kwargs: Any) -> tuple[GPT, dict[str, Any]]:
    """Train a copy of `policy` with PPO against `reward` on `prompts`; see `PPOTrainer`."""
    return PPOTrainer(policy, reward, prompts, config, out_dir, **kwargs).train()
