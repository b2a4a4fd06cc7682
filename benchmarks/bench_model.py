"""Speed of the hooked model, as ratios against references measured in the same run.

    python benchmarks/bench_model.py                 # the full run (a few minutes on 2 cores)
    python benchmarks/bench_model.py --quick         # smoke run: same rows, tiny repeats
    python benchmarks/bench_model.py --out bench.md  # also write the table as markdown

Rows (every number is measured in this run, on this machine):

1. Training step (forward + backward + AdamW) of the `gpt2` preset at nanoGPT's CPU recipe
   (4 layers, 4 heads, 128 wide, block 64, batch 12, vocab 65, dropout 0), with the hook points
   present and unused, against the *same* model object (same weights, same optimizer) with every
   `HookPoint` swapped in place for a plain `nn.Identity`.
2. Greedy decode of 256 new tokens (block 256, batch 1) with the KV cache, against re-running the
   whole context every step (nanoGPT's way: `use_kv_cache=False`): at the CPU recipe's width
   (4 layers, 128 wide), and again at nanoGPT's own tiny-Shakespeare model, the one whose
   context is block 256 (`config/train_shakespeare_char.py`: 6 layers, 6 heads, 384 wide). At
   128 wide a decode step is mostly Python and dispatch overhead, which a cache cannot remove
   (`--decode-floor` times a bare-tensor decoder of the same weights to show that ceiling).
3. `run_with_cache` restricted to the residual stream (`hook_resid_pre/mid/post`) against a plain
   forward on the same batch, both under `torch.no_grad()`.
4. Row 2's cached decode with a steering vector added to the middle layer's residual stream at
   every position (`generate(..., steering=...)`), against the same decode unsteered.

Noise control: the two sides of a row are timed in alternating order (A B, B A, A B, ...) over
several rounds after a warm-up, and a row's ratio is the median of the per-round ratios, so load
from other processes falls on both sides alike. Nothing here asserts on a timing; the table says
whether each goal was met on this run.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nanolens.models import GPT, preset_config
from nanolens.steering import Steering, random_direction
from transformer_lens.hook_points import HookPoint

RESID_HOOKS = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post")


# ---- measurement helpers -----------------------------------------------------------------------
def timed(fn: Callable[[], object], setup: Callable[[], object] | None = None) -> float:
    """Seconds one call of `fn` takes; `setup` runs first, untimed. Garbage collection is paused
    while timing, for both sides of a row alike."""
    if setup is not None:
        setup()
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    finally:
        gc.enable()


@dataclass
class Side:
    run: Callable[[], object]
    setup: Callable[[], object] | None = None


def interleaved(*sides: Side, rounds: int) -> list[list[float]]:
    """Time the sides in turn over `rounds` rounds, reversing their order every round
    (A B, B A, A B, ...) so that none always runs first; one list of times per side."""
    times: list[list[float]] = [[] for _ in sides]
    order = list(range(len(sides)))
    for r in range(rounds):
        for i in order if r % 2 == 0 else order[::-1]:
            times[i].append(timed(sides[i].run, sides[i].setup))
    return times


@dataclass
class Row:
    what: str
    ours: str
    reference: str
    ratio_text: str
    goal: str
    met: bool


def paired_ratios(num: list[float], den: list[float]) -> list[float]:
    return [a / b for a, b in zip(num, den)]


def ratio_text(ratios: list[float], fmt: str = "{:.3f}", suffix: str = "") -> str:
    """The median ratio, with the interquartile range of the per-round ratios (the noise)."""
    mid = fmt.format(statistics.median(ratios)) + suffix
    if len(ratios) < 4:
        return mid
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return f"{mid} (IQR {fmt.format(q1)}-{fmt.format(q3)})"


# ---- row 1: training step, hook points vs plain nn.Identity ---------------------------------------
def hook_sites(model: nn.Module) -> list[tuple[nn.Module, str, HookPoint]]:
    """(parent, attribute, HookPoint) for every hook point in the module tree."""
    sites = []
    for name, module in model.named_modules():
        if isinstance(module, HookPoint):
            parent_name, _, attr = name.rpartition(".")
            sites.append((model.get_submodule(parent_name), attr, module))
    return sites


class HookSwap:
    """Swap every HookPoint of a model for a plain `nn.Identity` and back, in place.

    The stand-ins carry empty `fwd_hooks`/`bwd_hooks` lists only so that the model's
    `is_observed()` check (which picks the fused kernels) reads them as it reads an unused hook
    point; they are otherwise stock `nn.Identity` modules.
    """

    def __init__(self, model: nn.Module) -> None:
        self.sites = hook_sites(model)
        self.identities = []
        for _ in self.sites:
            identity = nn.Identity()
            identity.fwd_hooks, identity.bwd_hooks = [], []
            self.identities.append(identity)

    def plain(self) -> None:
        for (parent, attr, _), identity in zip(self.sites, self.identities):
            setattr(parent, attr, identity)

    def hooked(self) -> None:
        for parent, attr, hook in self.sites:
            setattr(parent, attr, hook)


def bench_train(args: argparse.Namespace) -> Row:
    torch.manual_seed(0)
    config = preset_config("gpt2", n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=65, dropout=0.0)
    model = GPT(config).train()
    # nanoGPT's shakespeare_char optimizer settings (lr 1e-3, betas (0.9, 0.99), weight decay 0.1).
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 65, (args.batch, config.block_size + 1), generator=generator) for _ in range(8)]
    swap = HookSwap(model)

    def steps() -> None:
        for i in range(args.train_steps):
            chunk = batches[i % len(batches)]
            loss = model(chunk[:, :-1], return_type="loss", targets=chunk[:, 1:])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    # One model, one optimizer: the swap (untimed) decides which modules sit at the hook sites.
    hooked, plain = Side(steps, swap.hooked), Side(steps, swap.plain)
    try:
        for _ in range(args.warmup):
            timed(hooked.run, hooked.setup)
            timed(plain.run, plain.setup)
        t_ours, t_ref = interleaved(hooked, plain, rounds=args.rounds)
    finally:
        swap.hooked()
    tokens = args.train_steps * args.batch * config.block_size
    ratios = paired_ratios(t_ref, t_ours)  # throughput ratio = reference time / our time
    return Row(
        what=f"training step tok/s (fwd+bwd+AdamW), gpt2 4L/4H/128, block 64, batch {args.batch}: "
        f"{len(swap.sites)} unused HookPoints vs nn.Identity",
        ours=f"{tokens / statistics.median(t_ours):,.0f}",
        reference=f"{tokens / statistics.median(t_ref):,.0f}",
        ratio_text=ratio_text(ratios),
        goal=">= 0.97",
        met=statistics.median(ratios) >= 0.97,
    )


# ---- row 2: decode with and without the KV cache ------------------------------------------------
# nanoGPT's own tiny-Shakespeare model (config/train_shakespeare_char.py), whose context is block 256
SHAKESPEARE_CHAR = {"n_layer": 6, "n_head": 6, "n_embd": 384}


def decode_model(args: argparse.Namespace, size: dict[str, int] | None = None) -> GPT:
    """The model rows 2 and 4 decode with: the gpt2 preset at the --decode-* sizes (or `size`), seeded."""
    torch.manual_seed(0)
    size = size or {"n_layer": args.decode_n_layer, "n_head": args.decode_n_head, "n_embd": args.decode_n_embd}
    return GPT(preset_config("gpt2", block_size=args.decode_block, vocab_size=65, dropout=0.0, **size)).eval()


def bench_decode(args: argparse.Namespace, size: dict[str, int] | None = None) -> Row:
    model = decode_model(args, size)
    config = model.config
    prompt = torch.zeros(1, 1, dtype=torch.long)
    n = args.decode_tokens
    out: dict[str, torch.Tensor] = {}

    def side(name: str, fn: Callable[[], torch.Tensor]) -> Side:
        def run() -> None:
            out[name] = fn()

        return Side(run)

    sides = [
        side("cached", lambda: model.generate(prompt, n, temperature=0, use_kv_cache=True)),
        side("uncached", lambda: model.generate(prompt, n, temperature=0, use_kv_cache=False)),
    ]
    floor = args.decode_floor and size is None and n <= config.block_size  # the bare decoder never crops its cache
    if floor:
        sides += [side("bare_cached", lambda: bare_generate(model, prompt, n, True)),
                  side("bare_uncached", lambda: bare_generate(model, prompt, n, False))]
    for _ in range(args.warmup):
        for s in sides:
            s.run()
    # the 384-wide model re-runs its context for ~15 s a generation: fewer rounds (its ratio is far from the goal line)
    times = interleaved(*sides, rounds=args.decode_rounds if size is None else max(2, args.decode_rounds // 4))
    t_ours, t_ref = times[0], times[1]
    same = torch.equal(out["cached"], out["uncached"])
    ratios = paired_ratios(t_ref, t_ours)
    if floor:
        bare_same = all(torch.equal(out["cached"], out[k]) for k in ("bare_cached", "bare_uncached"))
        bare = statistics.median(paired_ratios(times[3], times[2]))
        share = statistics.median(paired_ratios(times[2], t_ours))
        args.notes.append(
            f"decode floor: the same weights decoded by bare tensor code (no modules, no hook points, no checks; "
            f"logits of the last position only; same tokens: {'yes' if bare_same else 'NO'}) reach "
            f"{n / statistics.median(times[2]):,.1f} tok/s with a KV cache and {n / statistics.median(times[3]):,.1f} "
            f"without: {bare:.2f}x, the most this model's KV cache can give in eager PyTorch here. Ours decodes at "
            f"{share:.0%} of that bare cached speed."
        )
    return Row(
        what=f"decode tok/s, {n} new tokens, greedy, gpt2 {config.n_layer}L/{config.n_head}H/{config.n_embd}"
        + (" (nanoGPT's shakespeare_char model)" if size == SHAKESPEARE_CHAR else "")
        + f", block {args.decode_block}, batch 1: KV cache vs "
        "re-running the whole context (use_kv_cache=False)" + ("" if same else " [TOKENS DIFFER]"),
        ours=f"{n / statistics.median(t_ours):,.1f}",
        reference=f"{n / statistics.median(t_ref):,.1f}",
        ratio_text=ratio_text(ratios, "{:.2f}", "x"),
        goal=">= 5x",
        met=statistics.median(ratios) >= 5.0 and same,
    )


def bench_steering(args: argparse.Namespace) -> Row:
    """Row 4: the same greedy KV-cache decode as row 2, with a steering vector added to one
    layer's residual stream at every position, against the unsteered decode."""
    model = decode_model(args)
    config = model.config
    layer = config.n_layer // 2
    steering = Steering(random_direction(config.n_embd, norm=1.0, layer=layer, model=model, seed=0), coeff=0.5)
    prompt = torch.zeros(1, 1, dtype=torch.long)
    n = args.decode_tokens
    sides = [Side(lambda: model.generate(prompt, n, temperature=0, steering=steering)),
             Side(lambda: model.generate(prompt, n, temperature=0))]
    for _ in range(args.warmup):
        for side in sides:
            side.run()
    t_steered, t_plain = interleaved(*sides, rounds=args.decode_rounds)  # ~0.5 s a side: cheap to repeat
    ratios = paired_ratios(t_plain, t_steered)  # steered speed relative to plain
    return Row(
        what=f"decode tok/s with a steering vector at layer {layer} (every position, KV cache), {n} new tokens, same "
        "model as row 2, vs unsteered",
        ours=f"{n / statistics.median(t_steered):,.1f}",
        reference=f"{n / statistics.median(t_plain):,.1f}",
        ratio_text=ratio_text(ratios),
        goal=">= 0.95 (steering adds <= 5%)",
        met=statistics.median(ratios) >= 0.95,
    )


@torch.no_grad()
def bare_generate(model: GPT, prompt: torch.Tensor, n: int, use_cache: bool) -> torch.Tensor:
    """Greedy decoding of a `gpt2`-preset model (learned positions, pre-LayerNorm, GELU, tied
    embeddings) written as bare tensor code, nanoGPT's way: the floor of what eager PyTorch can
    do with these weights. Used only by --decode-floor, to tell our overhead from PyTorch's."""
    cfg = model.config
    heads, d_head, width, eps = cfg.n_head, cfg.d_head, cfg.n_embd, cfg.norm_eps
    w_e, w_pos = model.embed.W_E, model.pos_embed.W_pos
    layers = [
        (b.ln1.w, b.ln1.b, b.attn.qkv.weight, b.attn.qkv.bias, b.attn.out.weight, b.attn.out.bias,
         b.ln2.w, b.ln2.b, b.mlp.fc_in.weight, b.mlp.fc_in.bias, b.mlp.fc_out.weight, b.mlp.fc_out.bias)
        for b in model.blocks
    ]
    batch = prompt.shape[0]
    keys = [w_e.new_empty(batch, heads, cfg.block_size, d_head) for _ in layers]
    values = [w_e.new_empty(batch, heads, cfg.block_size, d_head) for _ in layers]

    def forward(tokens: torch.Tensor, pos: int, cache: bool) -> torch.Tensor:
        t = tokens.shape[1]
        x = F.embedding(tokens, w_e) + w_pos[pos : pos + t]
        for i, (l1w, l1b, qkv_w, qkv_b, o_w, o_b, l2w, l2b, in_w, in_b, out_w, out_b) in enumerate(layers):
            h = F.layer_norm(x, (width,), l1w, l1b, eps)
            q, k, v = F.linear(h, qkv_w, qkv_b).view(batch, t, 3, heads, d_head).permute(2, 0, 3, 1, 4).unbind(0)
            if cache:
                keys[i][:, :, pos : pos + t], values[i][:, :, pos : pos + t] = k, v
                k, v = keys[i][:, :, : pos + t], values[i][:, :, : pos + t]
            y = F.scaled_dot_product_attention(q, k, v, is_causal=t > 1)
            x = x + F.linear(y.transpose(1, 2).reshape(batch, t, width), o_w, o_b)
            h = F.layer_norm(x, (width,), l2w, l2b, eps)
            x = x + F.linear(F.gelu(F.linear(h, in_w, in_b)), out_w, out_b)
        return F.linear(F.layer_norm(x[:, -1], (width,), model.ln_final.w, model.ln_final.b, eps), w_e)

    seq = prompt
    for step in range(n):
        if use_cache:
            logits = forward(seq, 0, True) if step == 0 else forward(seq[:, -1:], seq.shape[1] - 1, True)
        else:
            logits = forward(seq[:, -cfg.block_size :], 0, False)
        seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], dim=1)
    return seq


# ---- row 3: run_with_cache on the residual stream vs a plain forward ---------------------------
def bench_cache(args: argparse.Namespace) -> Row:
    torch.manual_seed(0)
    model = GPT(preset_config("gpt2", block_size=args.cache_seq, vocab_size=65, dropout=0.0)).eval()
    batch = torch.randint(0, 65, (args.batch, args.cache_seq), generator=torch.Generator().manual_seed(1))
    resid = lambda name: name.endswith(RESID_HOOKS)  # noqa: E731
    n_cached = sum(map(resid, model.hook_dict))

    @torch.no_grad()
    def with_cache() -> None:
        for _ in range(args.cache_iters):
            model.run_with_cache(batch, names_filter=resid)

    @torch.no_grad()
    def plain() -> None:
        for _ in range(args.cache_iters):
            model(batch)

    for _ in range(args.warmup):
        with_cache()
        plain()
    t_ours, t_ref = interleaved(Side(with_cache), Side(plain), rounds=args.rounds)
    ratios = paired_ratios(t_ours, t_ref)  # time ratio: 1.10 means 10% overhead
    per_call = lambda ts: statistics.median(ts) / args.cache_iters * 1e3  # noqa: E731
    return Row(
        what=f"forward time, batch {args.batch}x{args.cache_seq}, no_grad: run_with_cache of the "
        f"{n_cached} resid_pre/mid/post hooks vs plain forward",
        ours=f"{per_call(t_ours):.2f} ms",
        reference=f"{per_call(t_ref):.2f} ms",
        ratio_text=ratio_text(ratios),
        goal="<= 1.15 (overhead <= 15%)",
        met=statistics.median(ratios) <= 1.15,
    )


# ---- report -----------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def header(args: argparse.Namespace) -> list[str]:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    lines = [
        f"nanolens bench_model{' (--quick: smoke run, numbers not meaningful)' if args.quick else ''}",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads ({available_cores()} cores available), "
        f"CPU: {cpu_model()}, Python {platform.python_version()}, load average at start: {load}",
        f"rounds: {args.rounds} (decode {args.decode_rounds}) in alternating order after warm-up; ratio = median of the per-round ratios (IQR = their spread)",
    ]
    if hasattr(os, "getloadavg") and os.getloadavg()[0] > available_cores():
        lines.append(
            f"WARNING: the load average exceeds the {available_cores()} cores: other processes compete for the CPU, "
            "so timings are unreliable, multi-threaded ones most (each parallel op waits for its slowest, descheduled "
            "thread; see the IQRs): rerun on a quiet machine, or with --threads 1"
        )
    return lines


def table(rows: list[Row]) -> list[str]:
    lines = ["| what | ours | reference | ratio | goal | met |", "| --- | ---: | ---: | ---: | --- | --- |"]
    for r in rows:
        lines.append(f"| {r.what} | {r.ours} | {r.reference} | {r.ratio_text} | {r.goal} | {'yes' if r.met else 'no'} |")
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: same rows with tiny sizes and repeats")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1, as bench_train.py: with other processes on the same cores, extra "
                   "threads spin-wait and the timings turn to noise)")
    p.add_argument("--rounds", type=int, default=None, help="alternating timing rounds for rows 1 and 3 (default 24)")
    p.add_argument("--decode-rounds", type=int, default=None,
                   help="timing rounds for the decode rows (default 32; a quarter of that for the 384-wide model)")
    p.add_argument("--warmup", type=int, default=None, help="untimed warm-up repeats of each side (default 2)")
    p.add_argument("--batch", type=int, default=12, help="batch size of rows 1 and 3 (nanoGPT's CPU recipe: 12)")
    p.add_argument("--train-steps", type=int, default=None, help="training steps per timed trial (default 5)")
    p.add_argument("--decode-tokens", type=int, default=None, help="new tokens per generation (default 256)")
    p.add_argument("--decode-block", type=int, default=256, help="block_size of the decode model (default 256)")
    p.add_argument("--decode-n-layer", type=int, default=4, help="layers of the decode model (default 4)")
    p.add_argument("--decode-n-head", type=int, default=4, help="heads of the decode model (default 4)")
    p.add_argument("--decode-n-embd", type=int, default=128, help="width of the decode model (default 128)")
    p.add_argument("--decode-floor", action="store_true",
                   help="also time a bare-tensor decoder with the same weights (no modules or hooks) and print "
                   "the KV-cache speed-up it reaches, below the table: what eager PyTorch allows for this model")
    p.add_argument("--cache-seq", type=int, default=64, help="sequence length of row 3's batch (default 64)")
    p.add_argument("--cache-iters", type=int, default=None, help="forwards per timed trial in row 3 (default 10)")
    p.add_argument("--out", type=Path, default=None, help="also write the header and table as markdown to this file")
    args = p.parse_args(argv)
    args.notes = []
    quick = args.quick
    defaults = dict(rounds=(2, 24), decode_rounds=(2, 32), warmup=(1, 2), train_steps=(2, 5), decode_tokens=(16, 256), cache_iters=(2, 10))
    for name, (q, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, q if quick else full)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    head = header(args)
    for line in head:
        print(line, flush=True)
    rows = []
    benches = (("training step", bench_train), ("decode", bench_decode),
               ("decode, nanoGPT's shakespeare_char size", lambda a: bench_decode(a, SHAKESPEARE_CHAR)),
               ("run_with_cache", bench_cache), ("steered decode", bench_steering))
    for name, bench in benches:
        print(f"... {name}", file=sys.stderr, flush=True)
        rows.append(bench(args))
    lines = table(rows) + ([""] + args.notes if args.notes else [])
    print()
    print("\n".join(lines))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(["# " + head[0], "", *(f"{h}  " for h in head[1:]), "", *lines, ""]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
