"""One table that sets fine-tuning beside steering, and the command that fills it.

`run_comparison` trains whatever is missing of SFT, the reward model, PPO (against the reward
model) and DPO from one base checkpoint, picks the steering setting (or reads the one
`nanolens demo` chose), evaluates every row on the same held-out openings with the same scorer
and sampling (`evaluate_policy`), and writes ``comparison.md``, ``comparison.csv`` and
``comparison_samples.csv``. ``nll_rise`` in the table is the log of a row's perplexity under
the base model minus the base model's own (nats per token): the fluency cost. Compute is what
each method spent on top of the base model: wall seconds and token positions through forward
passes (PPO's row includes its reward model's training).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from nanolens.corpora import sentiment_pairs
from nanolens.corpora.sentiment import score_sentiment
from nanolens.files import atomic_write_text
from nanolens.models import GPT
from nanolens.steering import Steering, SteeringVector, mean_difference, summarize_sweep, sweep
from nanolens.tables import markdown_table
from nanolens.training import TrainConfig, model_dir, resolve_device

from .data import Template, fits_context, heldout_prompts, sentiment_preferences, sentiment_prompts, sentiment_sft_pairs
from .dpo import train_dpo
from .evaluate import evaluate_policy
from .loop import read_summary, write_summary
from .policy import count_tokens
from .ppo import PPOConfig, ppo
from .reward import RewardModel, train_reward_model
from .sft import sft

STAGES = ("sft", "reward", "ppo", "dpo")
TABLE_COLUMNS = ["method", "template", "follow_rate", "frac_positive", "mean_sentiment", "perplexity", "nll_rise",
                 "seconds", "tokens", "n"]


# ---------------------------------------------------------------------------------------------
# the plan of a comparison run
# ---------------------------------------------------------------------------------------------
@dataclass
class ComparePlan:
    """Sizes and budgets of `run_comparison` (`small()` is what the tests run)."""

    n_prompts: int = 24  # held-out openings for the table
    prompt_seed: int = 1
    samples_per_prompt: int = 4
    max_new_tokens: int = 96
    temperature: float = 0.8
    sft_pairs: int = 2000
    sft_iters: int = 400
    pref_pairs: int = 2000
    reward_iters: int = 300
    ppo_steps: int = 100
    ppo_prompts: int = 512
    dpo_iters: int = 300
    dpo_beta: float = 0.1
    batch_size: int = 16
    steer_pairs: int = 64
    steer_prompts: int = 8  # openings for choosing the steering layer and coefficient (not the table's)
    steer_coeffs: tuple[float, ...] = (0.25, 0.5, 1.0)
    quick: bool = False

    @classmethod
    def small(cls) -> "ComparePlan":
        return cls(n_prompts=3, samples_per_prompt=2, max_new_tokens=16, sft_pairs=24, sft_iters=4, pref_pairs=24,
                   reward_iters=4, ppo_steps=2, ppo_prompts=8, dpo_iters=4, batch_size=4, steer_pairs=8, steer_prompts=2,
                   steer_coeffs=(0.5,), quick=True)


def stage_configs(plan: ComparePlan, device: str, seed: int, progress: bool) -> dict[str, Any]:
    """The TrainConfig / PPOConfig of each stage of `plan`."""
    def train(iters: int, lr: float, **kw: Any) -> TrainConfig:
        return TrainConfig(max_iters=iters, batch_size=plan.batch_size, learning_rate=lr, min_lr=lr / 10,
                           warmup_iters=min(20, max(iters // 10, 0)), eval_interval=max(iters // 4, 1),
                           eval_iters=2 if plan.quick else 20, log_interval=max(1, min(10, iters // 10 or 1)),
                           device=device, seed=seed, progress=progress, verbose=progress, **kw)

    return {
        "sft": train(plan.sft_iters, 3e-4, sample_interval=0 if plan.quick else max(plan.sft_iters // 2, 1), sample_tokens=plan.max_new_tokens),
        "reward": train(plan.reward_iters, 1e-4),
        "ppo": PPOConfig(steps=plan.ppo_steps, prompts_per_step=4 if plan.quick else 8, samples_per_prompt=2 if plan.quick else 4,
                         max_new_tokens=plan.max_new_tokens, learning_rate=5e-5, kl_coef=0.05, lam=1.0, minibatch_size=8,
                         sample_interval=0 if plan.quick else 10, device=device, seed=seed, progress=progress, verbose=progress),
        "dpo": train(plan.dpo_iters, 3e-5),
    }


# ---------------------------------------------------------------------------------------------
# the stages
# ---------------------------------------------------------------------------------------------
def run_stage(stage: str, base: GPT, out: Path, config: Any, plan: ComparePlan, reward_dir: Path | None = None) -> Path:
    """Train one stage on the embedded tasks into `out` (fits every pair to the context)."""
    tok, block = base.tokenizer, base.config.block_size
    if stage == "sft":
        template = Template()
        pairs = sentiment_sft_pairs(plan.sft_pairs, template=template, fits=fits_context(tok, template, block))
        sft(copy.deepcopy(base), pairs, config, out, template=template)  # sft trains the model it is given
    elif stage in ("reward", "dpo"):
        template = Template.of(base)
        prefs = sentiment_preferences(plan.pref_pairs, template=template, fits=fits_context(tok, template, block))
        if stage == "reward":
            train_reward_model(base, prefs, config, out)
        else:
            train_dpo(base, prefs, config, out, beta=plan.dpo_beta)
    elif stage == "ppo":
        rm = RewardModel.load(reward_dir, device=config.device) if reward_dir is not None else score_sentiment
        _, summary = ppo(base, rm, sentiment_prompts(plan.ppo_prompts), config, out, metric=score_sentiment)
        if reward_dir is not None:  # PPO's compute includes its reward model's
            rm_summary = read_summary(reward_dir)
            summary.update(reward_seconds=rm_summary.get("seconds", 0), reward_tokens=rm_summary.get("tokens", 0))
            write_summary(out, summary)
    else:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    return out


def _token_spans(tokenizer: Any, texts: Sequence[str]) -> list[tuple[int, int]]:
    """The token span of each text's last sentence (where a `sentiment_pairs` text shows its label)."""
    spans = []
    for t in texts:
        start = t.rfind(". ", 0, len(t) - 1)
        first = len(tokenizer.encode(t[: start + 1])) if start >= 0 else 0
        spans.append((first, len(tokenizer.encode(t))))
    return spans


def choose_steering(base: GPT, plan: ComparePlan, exclude: Sequence[str] = (), demo_dir: str | Path | None = None,
                    progress: bool = True) -> tuple[Any, dict[str, Any]]:
    """The steered row's setting: what `nanolens demo` chose (its summary.json and vectors/) when
    `demo_dir` is given, else the mean difference (CAA) at the layer and the smallest relative
    coefficient that makes >= 90% of continuations positive on `plan.steer_prompts` held-out
    openings not in `exclude` (the table's). Returns (Steering, info with seconds and tokens)."""
    if demo_dir is not None:
        demo = json.loads((Path(demo_dir) / "summary.json").read_text(encoding="utf-8"))
        best = demo["best"]
        vector = SteeringVector.load(Path(demo_dir) / "vectors" / f"{best['method']}_L{best['layer']}")
        seconds = sum(demo["timings"].get(k, 0.0) for k in ("directions", "steering"))
        info = {"method": best["method"], "layer": best["layer"], "coeff": best["pos_coeff"], "seconds": seconds, "tokens": None}
        return Steering(vector, coeff=best["pos_coeff"], relative=True), info

    start = time.perf_counter()
    block = base.config.block_size
    with count_tokens(base) as count:
        pos, neg = sentiment_pairs(plan.steer_pairs, max_chars=block)
        spans = _token_spans(base.tokenizer, pos) + _token_spans(base.tokenizer, neg)
        vectors = {layer: mean_difference(base, pos, neg, layer, position=spans) for layer in range(base.config.n_layer)}
        pool = [p for p in heldout_prompts(plan.steer_prompts + len(exclude), seed=plan.prompt_seed + 1000) if p not in set(exclude)]
        df = sweep(base, pool[: plan.steer_prompts], {"mean_difference": vectors}, [0.0, *plan.steer_coeffs],
                   samples_per_prompt=2, max_new_tokens=plan.max_new_tokens, temperature=plan.temperature, stop="\n",
                   progress=progress)
    best = summarize_sweep(df).iloc[0]
    info = {"method": "mean_difference", "layer": int(best["layer"]), "coeff": float(best["pos_coeff"]),
            "seconds": round(time.perf_counter() - start, 3), "tokens": count.tokens}
    return Steering(vectors[info["layer"]], coeff=info["coeff"], relative=True), info


# ---------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------
def compare(base: GPT, runs: Mapping[str, str | Path], *, plan: ComparePlan | None = None, steering: Any = None,
            steering_info: Mapping[str, Any] | None = None, seed: int = 0, progress: bool = True) -> tuple[Any, Any]:
    """One row per method on the same held-out openings and scorer: base, base given the SFT
    template (how often an untuned model follows it), steered (with `steering`), and each run in
    `runs` (name -> run directory, e.g. {"sft": ..., "ppo": ..., "dpo": ...}). Returns (table,
    samples) as DataFrames."""
    plan = plan or ComparePlan()
    prompts = heldout_prompts(plan.n_prompts, seed=plan.prompt_seed)
    kw = dict(samples_per_prompt=plan.samples_per_prompt, max_new_tokens=plan.max_new_tokens, temperature=plan.temperature,
              seed=seed, progress=progress, base=base)
    rows: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []

    def add(method: str, model: GPT, compute: Mapping[str, Any], **extra: Any) -> None:
        stats, s = evaluate_policy(model, prompts, **kw, **extra)
        rows.append({"method": method, **stats, "seconds": compute.get("seconds", 0.0), "tokens": compute.get("tokens", 0)})
        samples.extend({"method": method, **x} for x in s)

    add("base", base, {})
    if "sft" in runs:
        add("base + SFT template", base, {}, template=Template.of(GPT.load(model_dir(runs["sft"]))))
    if steering is not None:
        info = dict(steering_info or {})
        label = f"steered ({info.get('method', 'vector')}, layer {info.get('layer', '?')}, coeff {info.get('coeff', '?')})"
        add(label, base, info, steering=steering)
    for name, run in runs.items():
        if name == "reward":
            continue
        summary = read_summary(run)
        compute = {"seconds": summary.get("seconds", 0.0) + summary.get("reward_seconds", 0.0),
                   "tokens": (summary.get("tokens") or 0) + (summary.get("reward_tokens") or 0)}
        add(name, GPT.load(model_dir(run), device=base.device), compute)
    table = pd.DataFrame(rows)
    base_ppl = table.perplexity.iloc[0]
    table["nll_rise"] = [math.log(p / base_ppl) if p > 0 and base_ppl > 0 else float("nan") for p in table.perplexity]
    table["template"] = [t.replace("\n", "\\n") for t in table.template]
    table.attrs.update({"prompts": prompts, "samples_per_prompt": plan.samples_per_prompt,
                        "max_new_tokens": plan.max_new_tokens, "temperature": plan.temperature})
    return table[TABLE_COLUMNS], pd.DataFrame(samples)


def _display(table: Any) -> Any:
    """The table as printed: token counts as whole numbers, '-' where none was counted."""
    shown = table.copy()
    shown["tokens"] = [f"{int(t):,}" if t == t and t is not None else "-" for t in table["tokens"]]
    shown["seconds"] = [f"{float(t):.0f}" for t in table["seconds"]]
    return shown


def write_comparison(table: Any, samples: Any, out: str | Path, notes: Sequence[str] = ()) -> Path:
    """comparison.md (the table, how it was measured, a sample per method), .csv, _samples.csv."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "comparison.csv", index=False)
    samples.to_csv(out / "comparison_samples.csv", index=False)
    a = table.attrs
    lines = [
        "# Fine-tuning vs steering", "",
        f"{len(a.get('prompts', []))} held-out story openings (never in the training corpus) x {a.get('samples_per_prompt')} "
        f"samples each, up to {a.get('max_new_tokens')} new tokens at temperature {a.get('temperature')}, each response read "
        "up to its template's end marker and scored with the word-count sentiment scorer (positive if > 0). "
        "`follow_rate`: non-empty responses that end with the end marker; `perplexity`: of the responses under the base model, "
        "as continuations of the bare opening; `nll_rise`: its log over the base row's (nats per token); `seconds` / `tokens`: "
        "compute spent on top of the base model (token positions through forward passes; PPO includes its reward model).", "",
        markdown_table(_display(table), TABLE_COLUMNS), "", *[f"- {n}" for n in notes], "", "## One sample per method", "",
    ]
    for method in dict.fromkeys(samples.method):
        s = samples[samples.method == method].iloc[0]
        lines += [f"**{method}** (score {s.score:+.2f}): `{s.prompt}` → `{s.response}`", ""]
    return atomic_write_text(out / "comparison.md", "\n".join(lines))


def run_comparison(base_ckpt: str | Path, out: str | Path, *, plan: ComparePlan | None = None,
                   runs: Mapping[str, str | Path] | None = None, steering: str | Path | None = "auto",
                   device: str = "auto", seed: int = 0, progress: bool = True) -> Path:
    """The whole comparison from one base checkpoint: train each stage of STAGES not given in
    `runs` (nor already finished in `out/STAGE`), choose the steering ("auto", a `nanolens demo`
    output directory, or None for no steered row), evaluate, write `out/comparison.md`."""
    plan = plan or ComparePlan()
    device = resolve_device(device)
    out = Path(out)
    base = GPT.load(model_dir(base_ckpt), device=device).eval()
    configs = stage_configs(plan, device, seed, progress)
    done = dict(runs or {})
    for stage in STAGES:
        if stage not in done and not (stage == "reward" and "ppo" in done):  # a finished PPO run needs no reward model
            target = out / stage
            if not read_summary(target):
                run_stage(stage, base, target, configs[stage], plan, reward_dir=Path(done["reward"]) if "reward" in done else None)
            done[stage] = target
    choice, info = (None, {})
    if steering is not None:
        exclude = heldout_prompts(plan.n_prompts, seed=plan.prompt_seed)
        choice, info = choose_steering(base, plan, exclude, None if steering == "auto" else steering, progress)
    table, samples = compare(base, {k: v for k, v in done.items() if k != "reward"}, plan=plan, steering=choice,
                             steering_info=info, seed=seed, progress=progress)
    rm = read_summary(done["reward"]) if "reward" in done else {}
    notes = [f"reward model: held-out accuracy {rm.get('val_accuracy', float('nan')):.3f} on {rm.get('val_pairs')} pairs "
             f"({rm.get('seconds', 0):.0f} s)"] if rm else []
    ppo = read_summary(done["ppo"]).get("final", {})
    if ppo:
        notes.append(f"PPO at its last step: reward {ppo['reward']:.3f}, KL to the reference {ppo['kl']:.3f} nats, "
                     f"positive fraction {ppo['frac_positive']:.3f} (curves: {Path(done['ppo']) / 'ppo_curves.png'})")
    return write_comparison(table, samples, out, notes)
