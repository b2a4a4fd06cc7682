"""What the explorer's pages compute, as plain functions: no Streamlit, no caching, no locks.

Each function takes a loaded `GPT` (or a folder) and returns arrays, dataclasses or pandas
frames, so the pages stay thin and everything here is unit-tested and benchmarked directly.
Functions that run the model attach hooks only through scoped context managers
(`run_with_cache`, `model.hooks`), so no hook outlives the call; the app additionally holds its
model lock around every call that runs the model, because the model object is shared between
browser sessions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from nanolens.corpora.sentiment import generate_corpus
from nanolens.models import GPT
from nanolens.models.presets import LADDER, PRESETS
from nanolens.training import TokenData
from nanolens.training.metrics import METRICS_FILE, read_metrics_checked
from nanolens.training.watch import HEAD_SCORES, attention_scores, pattern_hooks, repeated_tokens
from nanolens.training.runs import find_runs, is_checkpoint, is_run, read_checkpoint
from nanolens.training.state import STATE_FILE


class ExplorerError(ValueError):
    """Input the explorer cannot show (a folder that is not a run, a prompt it cannot read);
    the message says what to do, and the app shows it as a warning instead of a traceback."""


# ---------------------------------------------------------------------------------------------
# tokens and prompts
# ---------------------------------------------------------------------------------------------
def show_token(token: str) -> str:
    """A token as it should appear in a table or an axis label: whitespace made visible."""
    return token.replace("\n", "⏎").replace("\t", "⇥").replace(" ", "␣") or "∅"


def unique_labels(tokens: Sequence[str]) -> list[str]:
    """Axis labels for tokens, made unique by their position (plotly merges equal category labels)."""
    return [f"{show_token(t)}·{i}" for i, t in enumerate(tokens)]


def prompt_tokens(model: GPT, text: str, crop: bool = True) -> tuple[Any, list[str], bool]:
    """Token ids [1, pos] and their strings for `text`, checked for the explorer.

    Raises `ExplorerError` (with the fix) for an empty prompt or characters outside the model's
    vocabulary. A prompt longer than the context is cropped to its last `block_size` tokens
    when `crop`; the third value says whether that happened.
    """
    if model.tokenizer is None:
        raise ExplorerError("this checkpoint has no tokenizer.json, so the explorer cannot read text prompts")
    if text is None or text == "":
        raise ExplorerError("the prompt is empty: type some text to look at")
    try:
        ids = model.tokenizer.encode(text)
    except ValueError as err:  # UnknownCharactersError is a ValueError
        raise ExplorerError(f"{err}") from None
    if not ids:
        raise ExplorerError("the prompt is empty: type some text to look at")
    cropped = False
    block = model.config.block_size
    if len(ids) > block:
        if not crop:
            raise ExplorerError(f"the prompt is {len(ids)} tokens, longer than the model's context of {block}")
        ids, cropped = ids[-block:], True
    tokens = torch.tensor([ids], dtype=torch.long, device=model.device)
    return tokens, model.to_str_tokens(ids), cropped


def default_prompt(model: GPT, candidates: Sequence[str] = ()) -> str:
    """The first candidate the model's vocabulary can spell (else a few of its own characters)."""
    for text in list(candidates) + [
        "In the morning, Ada walked to the park. The sky was bright and she felt happy.",
        "The sky was bright and she felt",
        "to be or not to be",
    ]:
        try:
            ids = model.tokenizer.encode(text)
        except (ValueError, AttributeError):
            continue
        if 0 < len(ids) <= model.config.block_size:
            return text
    chars = getattr(model.tokenizer, "chars", None)
    if chars:
        letters = [c for c in chars if c.isalpha()] or list(chars)
        return "".join(letters[: min(16, model.config.block_size)])
    return ""


# ---------------------------------------------------------------------------------------------
# attention
# ---------------------------------------------------------------------------------------------
@dataclass
class AttentionData:
    """The attention patterns of one prompt: `patterns[layer]` is [head, query_pos, key_pos]."""

    tokens: list[str]
    patterns: dict[int, np.ndarray]
    cropped: bool = False

    @property
    def layers(self) -> list[int]:
        return sorted(self.patterns)

    def n_heads(self, layer: int) -> int:
        return int(self.patterns[layer].shape[0])


def attention_patterns(model: GPT, text: str | Any) -> AttentionData:
    """Every layer's attention pattern for `text` (a string, or token ids [1, pos])."""
    if isinstance(text, str):
        tokens, strs, cropped = prompt_tokens(model, text)
    else:
        tokens, cropped = text, False
        strs = model.to_str_tokens(tokens[0]) if model.tokenizer is not None else [str(int(t)) for t in tokens[0]]
    hooks = pattern_hooks(model)
    if not hooks:
        return AttentionData(strs, {}, cropped)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=[name for _, name in hooks], return_cache_object=False,
                                        stop_at_layer=hooks[-1][0] + 1)
    patterns = {layer: cache[name][0].float().cpu().numpy() for layer, name in hooks}
    return AttentionData(strs, patterns, cropped)


def attends_to(data: AttentionData, layer: int, head: int, query: int) -> np.ndarray:
    """How much query position `query` attends to each key position (zeros after it)."""
    return data.patterns[layer][head, query]


def attended_by(data: AttentionData, layer: int, head: int, key: int) -> np.ndarray:
    """How much each query position attends to key position `key`."""
    return data.patterns[layer][head, :, key]


def corpus_windows(ids: Sequence[int] | np.ndarray, length: int, n: int, seed: int = 0) -> np.ndarray:
    """`n` random windows of `length` token ids from a long id sequence: [n, length]."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) < length + 1:
        raise ExplorerError(f"need at least {length + 1} tokens of corpus text to score heads, got {len(ids)}")
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(ids) - length, size=n)
    return np.stack([ids[s : s + length] for s in starts])


def corpus_ids(model: GPT, run_dir: str | Path | None = None, min_tokens: int = 4096) -> tuple[np.ndarray, str]:
    """Token ids of corpus text to score heads on, and where they came from: the run's own
    validation split when it saved one (`run/data`), else the embedded sentiment corpus,
    encoded with the model's tokenizer (characters it cannot spell are dropped)."""
    if run_dir is not None and (Path(run_dir) / "data" / "meta.json").is_file():
        try:
            data = TokenData.load(Path(run_dir) / "data")
            ids = np.asarray(data.split("val"), dtype=np.int64)
            if len(ids) > model.config.block_size + 1 and int(ids.max()) < model.config.vocab_size:
                return ids, "the run's validation text"
        except Exception:  # a damaged data folder: fall back to the embedded corpus
            pass
    text = generate_corpus(max(min_tokens * 2, 20_000), seed=4321).text
    tok = model.tokenizer
    known = getattr(tok, "stoi", None)
    if known is not None:
        text = "".join(c for c in text if c in known)
    ids = np.asarray(tok.encode(text), dtype=np.int64)
    return ids, "the embedded sentiment corpus"


def head_scores(
    model: GPT,
    windows: np.ndarray,
    induction_length: int | None = None,
    induction_batch: int = 8,
    seed: int = 0,
) -> Any:
    """Every head's previous-token, first-token and induction scores (`nanolens.training.watch`,
    what the trainer records as it trains) as a DataFrame (layer, head, scores), on corpus
    `windows` [n, pos] and on random tokens repeated twice (`induction_length` tokens per copy,
    default half the context, at most 32)."""
    columns = ["layer", "head", *HEAD_SCORES]
    hooks = pattern_hooks(model)
    if not hooks:
        return pd.DataFrame(columns=columns)
    windows = torch.as_tensor(np.asarray(windows), dtype=torch.long, device=model.device)
    windows = (windows[None] if windows.dim() == 1 else windows)[:, : model.config.block_size]
    length = induction_length or max(2, min(32, model.config.block_size // 2))
    scores = attention_scores(model, windows, repeated_tokens(model, length, induction_batch, seed))
    rows = [{"layer": layer, "head": h, **{name: float(scores[name][row, h]) for name in HEAD_SCORES}}
            for row, (layer, _) in enumerate(hooks) for h in range(scores["previous_token"].shape[1])]
    return pd.DataFrame(rows, columns=columns)


def head_label(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def parse_head_label(label: str) -> tuple[int, int]:
    layer, head = label[1:].split("H")
    return int(layer), int(head)


# ---------------------------------------------------------------------------------------------
# logit lens
# ---------------------------------------------------------------------------------------------
@dataclass
class LogitLens:
    """The residual stream after each layer read out through `ln_final` and the unembedding.

    Row r of every array is the stream labelled `layers[r]` ("embed", then "L0", "L1", ...; the
    last row is the model's own output). `top_tokens`/`top_probs`: [rows, pos, k];
    `true_next_prob`: [rows, pos - 1], the probability given at position p to the token that
    really comes next (p + 1); `true_next_rank`: its rank (0 = top).
    """

    layers: list[str]
    tokens: list[str]
    top_tokens: list[list[list[str]]]
    top_probs: np.ndarray
    true_next_prob: np.ndarray
    true_next_rank: np.ndarray
    final_logits: np.ndarray = field(repr=False, default=None)
    cropped: bool = False

    def table(self, k: int = 1) -> Any:
        """A DataFrame: one row per layer, one column per position, cells "tok (p)" for the top `k`."""
        cells = [[" ".join(f"{show_token(t)} ({p:.2f})" for t, p in zip(self.top_tokens[r][i][:k], self.top_probs[r, i, :k]))
                  for i in range(len(self.tokens))] for r in range(len(self.layers))]
        return pd.DataFrame(cells, index=self.layers, columns=unique_labels(self.tokens))


def residual_streams(model: GPT) -> list[tuple[str, str]]:
    """(label, hook) of the residual stream entering the first block ("embed") and after each block."""
    n = model.config.n_layer
    if n == 0:
        return []
    return [("embed", "blocks.0.hook_resid_pre")] + [(f"L{i}", f"blocks.{i}.hook_resid_post") for i in range(n)]


def logit_lens(model: GPT, text: str | Any, k: int = 5) -> LogitLens:
    """The logit lens of `text`: what each layer would predict if the model stopped there."""
    if isinstance(text, str):
        tokens, strs, cropped = prompt_tokens(model, text)
    else:
        tokens, cropped = text, False
        strs = model.to_str_tokens(tokens[0])
    streams = residual_streams(model)
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, names_filter=[h for _, h in streams] or None,
                                             return_cache_object=False)
        rows = []
        for _, hook in streams:
            rows.append(model.unembed(model.ln_final(cache[hook][0])).float())
        if not rows:
            rows = [logits[0].float()]
        stack = torch.stack(rows)  # [rows, pos, vocab]
        probs = stack.softmax(-1)
    labels = [label for label, _ in streams] or ["output"]
    k = min(k, probs.shape[-1])
    top_p, top_i = probs.topk(k, dim=-1)
    top_tokens = [[[model.tokenizer.id_to_str(int(i)) if hasattr(model.tokenizer, "id_to_str") else model.to_string([int(i)])
                    for i in pos_ids] for pos_ids in row] for row in top_i.tolist()]
    ids = tokens[0]
    if ids.shape[0] > 1:
        nxt = ids[1:]
        true_p = probs[:, :-1].gather(-1, nxt.view(1, -1, 1).expand(probs.shape[0], -1, 1)).squeeze(-1)
        rank = (probs[:, :-1] > true_p.unsqueeze(-1)).sum(-1)
    else:
        true_p = torch.zeros(probs.shape[0], 0)
        rank = torch.zeros(probs.shape[0], 0, dtype=torch.long)
    return LogitLens(labels, strs, top_tokens, top_p.cpu().numpy(), true_p.cpu().numpy(), rank.cpu().numpy(),
                     logits[0].float().cpu().numpy(), cropped)


# ---------------------------------------------------------------------------------------------
# hook map
# ---------------------------------------------------------------------------------------------
OPTIONAL_HOOKS = {  # hook suffix -> the cfg switch that turns it on (TransformerLens' switches)
    "attn.hook_result": "use_attn_result", "hook_attn_in": "use_attn_in", "hook_q_input": "use_split_qkv_input",
    "hook_k_input": "use_split_qkv_input", "hook_v_input": "use_split_qkv_input", "hook_mlp_in": "use_hook_mlp_in",
    "unembed.hook_in": "use_hook_unembed", "unembed.hook_out": "use_hook_unembed",
}


def hook_component(name: str) -> str:
    """The diagram column of a hook: "embed", "block 0", ..., "final"."""
    if name.startswith("blocks."):
        return f"block {name.split('.')[1]}"
    if name.startswith(("ln_final", "unembed")):
        return "final"
    return "embed"


def hook_switch(name: str) -> str | None:
    for suffix, switch in OPTIONAL_HOOKS.items():
        if name.endswith(suffix):
            return switch
    return None


def hook_summary(model: GPT, text: str | Any) -> tuple[Any, dict[str, np.ndarray]]:
    """Every hook point for `text`: a DataFrame (hook, component, shape, mean, std, rms, min,
    max, status) in the model's own order, and the activations that fired ({name: array},
    batch dimension removed). Hooks behind an off switch have status "off: cfg.<switch>". The
    statistics are over the finite values (attention scores are -inf where masked)."""
    tokens = text if not isinstance(text, str) else prompt_tokens(model, text)[0]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, return_cache_object=False)
    acts = {name: value[0].float().cpu().numpy() for name, value in cache.items()}
    rows = []
    for name in model.hook_names():
        row: dict[str, Any] = {"hook": name, "component": hook_component(name)}
        if name in acts:
            a = acts[name].astype(np.float64)
            finite = a[np.isfinite(a)]  # attention scores hold -inf at masked (future) positions
            if finite.size == 0:
                finite = np.zeros(1)
            row.update(shape=str(list(cache[name].shape)), mean=float(finite.mean()), std=float(finite.std()),
                       rms=float(np.sqrt((finite ** 2).mean())), min=float(finite.min()), max=float(finite.max()),
                       status="fired")
        else:
            switch = hook_switch(name)
            row.update(shape="", mean=np.nan, std=np.nan, rms=np.nan, min=np.nan, max=np.nan,
                       status=f"off: cfg.{switch}" if switch else "did not fire")
        rows.append(row)
    return pd.DataFrame(rows), acts


# ---------------------------------------------------------------------------------------------
# runs, checkpoints, metrics
# ---------------------------------------------------------------------------------------------
@dataclass
class Source:
    """What a folder given to the explorer holds: one checkpoint, one run, or a folder of runs."""

    kind: str  # "checkpoint", "run" or "runs"
    path: Path
    runs: list[Path]


def resolve_source(path: str | Path) -> Source:
    """Classify a folder, or raise `ExplorerError` saying what a run folder looks like."""
    if path is None or str(path).strip() == "":
        raise ExplorerError("no folder given: type the path of a run (runs/NAME), a checkpoint (runs/NAME/best) "
                            "or a folder of runs (runs/)")
    path = Path(str(path).strip()).expanduser()
    if not path.exists():
        raise ExplorerError(f"{path} does not exist; train a model first with `nanolens train --out {path}`, "
                            "or give the path of an existing run")
    if not path.is_dir():
        raise ExplorerError(f"{path} is a file, not a folder; give a run folder (runs/NAME) or a checkpoint folder (runs/NAME/best)")
    if is_checkpoint(path):
        run = path.parent if is_run(path.parent) else path
        return Source("checkpoint", path, [run])
    if is_run(path):
        return Source("run", path, [path])
    runs = find_runs(path)
    if runs:
        return Source("runs", path, runs)
    raise ExplorerError(
        f"{path} is not a nanolens run: it holds no checkpoint (a folder with config.json and "
        "model.safetensors, such as best/ or last/) and no metrics.jsonl. Train one with "
        f"`nanolens train --out {path / 'NAME'}`, or point the explorer at runs/NAME or runs/NAME/best"
    )


@dataclass
class Metrics:
    """A run's metrics.jsonl, split by record kind (pandas frames) plus its samples over time."""

    logs: Any
    evals: Any
    samples: list[tuple[int, str]]
    records: int
    modified: float | None
    skipped: list[str] = field(default_factory=list)  # one problem per row that did not read

    @property
    def empty(self) -> bool:
        return self.records == 0


def read_run_metrics(run_dir: str | Path) -> Metrics:
    path = Path(run_dir) / METRICS_FILE
    records, skipped = read_metrics_checked(path)
    logs = pd.DataFrame([r for r in records if r.get("kind") == "log"], columns=["iter", "train_loss", "lr", "tokens_per_s", "elapsed"])
    evals = pd.DataFrame([r for r in records if r.get("kind") == "eval"], columns=["iter", "train_loss", "val_loss", "best_val_loss", "lr", "elapsed"])
    samples = [(int(r.get("iter", 0)), str(r["sample"])) for r in records if r.get("sample")]
    modified = path.stat().st_mtime if path.is_file() else None
    return Metrics(logs, evals, samples, len(records), modified, skipped)


def max_iters_of(run_dir: str | Path) -> int | None:
    """The run's planned iterations (from its last checkpoint's trainer state), if known."""
    for name in ("last", "best"):
        state = Path(run_dir) / name / STATE_FILE
        if state.is_file():
            try:
                return int(json.loads(state.read_text(encoding="utf-8"))["train_config"]["max_iters"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
    return None


def is_training(run_dir: str | Path, metrics: Metrics | None = None, idle_seconds: float = 300.0, now: float | None = None) -> bool:
    """True while a run looks alive: metrics written in the last `idle_seconds` and the last
    record short of the planned `max_iters`."""
    metrics = metrics or read_run_metrics(run_dir)
    if metrics.modified is None or (now or time.time()) - metrics.modified > idle_seconds:
        return False
    last_iter = max([int(x) for x in metrics.logs["iter"].tolist() + metrics.evals["iter"].tolist()] or [0])
    planned = max_iters_of(run_dir)
    return planned is None or last_iter < planned


def model_facts(model: GPT, checkpoint: str | Path | None = None) -> dict[str, Any]:
    """What the Model page shows: architecture, sizes, the preset and its ladder rung, losses."""
    cfg = model.config
    preset = cfg.preset
    rung = next((i for i, p in enumerate(LADDER, 1) if p.name == preset), None)
    facts: dict[str, Any] = {
        "preset": preset or "custom",
        "ladder rung": f"{rung} of {len(LADDER)}" if rung else "not on the ladder",
        "parameters": model.num_params(),
        "parameters (with position embeddings)": model.num_params(non_embedding=False),
        "layers": cfg.n_layer, "heads": cfg.n_head, "d_model": cfg.n_embd, "d_head": cfg.d_head,
        "context (block_size)": cfg.block_size, "vocabulary": cfg.vocab_size,
        "tokenizer": getattr(model.tokenizer, "kind", None) or "none",
    }
    if checkpoint is not None:
        ck = read_checkpoint(checkpoint)
        facts["iteration"] = ck.iter
        facts["val loss"] = ck.val_loss
        facts["best val loss"] = ck.best_val_loss
    return facts


def preset_description(model: GPT) -> str | None:
    preset = PRESETS.get(model.config.preset or "")
    return preset.description if preset else None
