"""A reward model learned from preferences: the GPT body plus a scalar head, Bradley-Terry loss.

Shown a prompt and two responses, a person (or here, the embedded generator) says which one is
better. The reward model reads a formatted (prompt, response) document and, from the final
residual at its last token, outputs one number; training makes the preferred response's number
the larger, by the Bradley-Terry model: P(chosen beats rejected) = sigmoid(r_chosen - r_rejected),
so the loss is -log sigmoid(r_chosen - r_rejected). Its accuracy is the share of held-out pairs
it orders correctly. PPO then maximises its score (`nanolens.models.ppo`).

    rm, summary = train_reward_model(GPT.load("runs/base/best"), sentiment_preferences(2000), config, "runs/rm")
    rm.score(["One morning, Tom walked to the park."], [" The sky was bright and he felt happy."])

A saved reward model is a GPT checkpoint directory (the body; `GPT.load` reads it) plus
``reward_head.safetensors`` and ``reward.json`` (its template and held-out accuracy).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from nanolens.files import atomic_directory
from nanolens.models import GPT, CheckpointError, load_model
from nanolens.models.checkpoint import write_model_files
from nanolens.training import TrainConfig, model_dir, resolve_device

from .data import Preference, PreferenceExample, Template, encode_preferences, pad, split_examples
from .loop import RunLog, fit, plot_curves, write_summary
from .policy import count_tokens

HEAD_FILE, REWARD_META = "reward_head.safetensors", "reward.json"


def bradley_terry_loss(r_chosen: Tensor, r_rejected: Tensor) -> Tensor:
    """-log sigmoid(r_chosen - r_rejected), averaged: the negative log-likelihood of the
    preferences under the Bradley-Terry model."""
    return -F.logsigmoid(r_chosen - r_rejected).mean()


class RewardModel(nn.Module):
    """`body` (a GPT) and a linear head reading its final residual (after ln_final) at each
    row's last real token: one scalar reward per row."""

    def __init__(self, body: GPT, template: Template | None = None) -> None:
        super().__init__()
        self.body = body
        self.template = template or Template.of(body)
        self.head = nn.Linear(body.config.n_embd, 1)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        self.meta: dict[str, Any] = {}

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """Rewards [batch] of right-padded rows `tokens` [batch, pos] of `lengths` real tokens."""
        hidden = self.body.ln_final(self.body(tokens, stop_at_layer=self.body.config.n_layer))
        last = hidden[torch.arange(tokens.shape[0], device=tokens.device), lengths - 1]
        return self.head(last).squeeze(-1)

    @torch.no_grad()
    def score(self, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 64) -> list[float]:
        """The reward of each (prompt, response), formatted with the model's template; a document
        longer than the context is read from its last `block_size` tokens."""
        tok, block, device = self.body.tokenizer, self.body.config.block_size, self.body.device
        seqs = [tok.encode(self.template.format(p, r))[-block:] for p, r in zip(prompts, responses)]
        out: list[float] = []
        was_training = self.training
        self.eval()
        try:
            for k in range(0, len(seqs), batch_size):
                tokens, lengths = pad(seqs[k : k + batch_size], device)
                out += self(tokens, lengths).float().tolist()
        finally:
            self.train(was_training)
        return out

    def pair_rewards(self, examples: Sequence[PreferenceExample]) -> tuple[Tensor, Tensor]:
        """(r_chosen, r_rejected) [batch] for encoded preference pairs, in one forward pass."""
        seqs = [e.prompt + e.chosen for e in examples] + [e.prompt + e.rejected for e in examples]
        tokens, lengths = pad(seqs, self.body.device)
        rewards = self(tokens, lengths)
        return rewards[: len(examples)], rewards[len(examples) :]

    # ---- persistence -----------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """The body's checkpoint files + the head + reward.json, atomically."""
        with atomic_directory(directory) as tmp:
            write_model_files(self.body, tmp)
            save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}, str(tmp / HEAD_FILE))
            (tmp / REWARD_META).write_text(json.dumps({"template": self.template.text, **self.meta}, indent=1) + "\n", encoding="utf-8")
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device | None = None) -> "RewardModel":
        """Read a reward model written by `save` (or a run directory holding one in last/)."""
        directory = model_dir(directory)
        if not (directory / HEAD_FILE).is_file():
            raise CheckpointError(f"{directory} holds no {HEAD_FILE}: it is a language model, not a reward model "
                                  "(train one with `nanolens finetune reward`)")
        meta = json.loads((directory / REWARD_META).read_text(encoding="utf-8"))
        model = cls(load_model(directory), Template(meta.pop("template")))
        model.head.load_state_dict(load_file(str(directory / HEAD_FILE)))
        model.meta = meta
        model.eval()
        return model.to(device) if device is not None else model


def reward_accuracy(model: RewardModel, examples: Sequence[PreferenceExample], batch_size: int = 64) -> dict[str, float]:
    """Held-out accuracy (share of pairs with r_chosen > r_rejected), loss and mean margin."""
    correct, loss, margin = 0.0, 0.0, 0.0
    with torch.no_grad():
        for k in range(0, len(examples), batch_size):
            rc, rr = model.pair_rewards(examples[k : k + batch_size])
            correct += float((rc > rr).sum())
            loss += float(bradley_terry_loss(rc, rr)) * len(rc)
            margin += float((rc - rr).sum())
    n = max(len(examples), 1)
    return {"accuracy": correct / n, "loss": loss / n, "margin": margin / n}


def train_reward_model(
    base: GPT,
    preferences: Sequence[Preference],
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    *,
    template: Template | str | None = None,
    callbacks: Iterable[Callable[[dict[str, Any]], Any]] = (),
) -> tuple[RewardModel, dict[str, Any]]:
    """Train a reward model (a copy of `base` plus a head) on preference pairs.

    `config`: a TrainConfig (max_iters, batch_size of pairs, learning_rate, eval_interval,
    val_fraction of pairs held out, device, progress). `template`: default the base's own (a
    base model's is "raw": the response continues the prompt). Writes `out_dir/last/` (the
    reward model), metrics.jsonl, reward_curves.png and summary.json (held-out accuracy and the
    compute spent). Returns (reward model, summary)."""
    config = config or TrainConfig(max_iters=200, learning_rate=3e-4, min_lr=3e-5, warmup_iters=10, eval_interval=50)
    template = Template.named(template) if template is not None else Template.of(base)
    examples = encode_preferences(preferences, base.tokenizer, template, base.config.block_size)
    train, val = split_examples(examples, config.val_fraction, config.seed)
    device = resolve_device(config.device)
    model = RewardModel(copy.deepcopy(base), template).to(device)
    log = RunLog(out_dir, config.max_iters, "reward model", config.progress, callbacks)

    def batch_loss(indices: list[int]) -> tuple[Tensor, dict[str, float]]:
        rc, rr = model.pair_rewards([train[i] for i in indices])
        return bradley_terry_loss(rc, rr), {"accuracy": (rc > rr).float().mean().item()}

    def evaluate() -> dict[str, float]:
        return {f"val_{k}": v for k, v in reward_accuracy(model, val).items()}

    try:
        with count_tokens(model.body) as count:
            fit(model, batch_loss, len(train), config, log, evaluate, postfix=("loss", "val_accuracy"), stream="reward")
    finally:
        log.close()
    final = next(r for r in reversed(log.records) if r["kind"] == "eval")
    model.meta = {"val_accuracy": final["val_accuracy"], "val_pairs": len(val), "train_pairs": len(train)}
    summary = {"method": "reward", "seconds": round(log.elapsed, 3), "tokens": count.tokens, "iters": config.max_iters,
               "template": template.text, **model.meta, "val_loss": final["val_loss"]}
    if out_dir is not None:
        model.save(Path(out_dir) / "last")
        plot_curves(log.records, [("Bradley-Terry loss", ["loss", "val_loss"]), ("accuracy", ["accuracy", "val_accuracy"])],
                    Path(out_dir) / "reward_curves.png", title="reward model")
    return model, write_summary(out_dir, summary)
