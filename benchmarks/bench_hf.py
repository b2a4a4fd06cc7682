"""nanolens against `transformers` on the same weights: is the hooked model as fast as the plain one?

    python benchmarks/bench_hf.py                 # the full run (about 15 minutes on 2 cores)
    python benchmarks/bench_hf.py --quick         # smoke run: same rows, tiny sizes and repeats
    python benchmarks/bench_hf.py --out bench.md  # also write the table as markdown

A random GPT-2 is built with `transformers` at two shapes, the CPU recipe's (4 layers, 4 heads,
128 wide, vocab 65) and GPT-2 small's (12 layers, 12 heads, 768 wide, vocab 50257: 124M
parameters), and opened with `GPT.from_hf` (same weights). For each shape:

1. forward tok/s under no_grad (all positions' logits, as both compute them by default);
2. training step tok/s (forward + backward + AdamW, dropout 0), each side with its own optimizer;
3. greedy decode tok/s with the KV cache, batch 1, 128 new tokens (`generate(..., temperature=0)`
   against `generate(..., do_sample=False)`); the tokens are checked equal;
4. sampled decode tok/s of 16 rows, 128 new tokens, temperature 1, top-k 50 on both sides;
5. peak RSS of loading the saved checkpoint directory (`GPT.from_hf(dir)` against
   `AutoModelForCausalLM.from_pretrained(dir)`) and running one forward, each in a fresh
   subprocess: the rise of the peak resident set over the process's RSS after its imports (the
   note below the table gives the load-only peaks too).

Ratio = ours / theirs in throughput (theirs / ours in memory), so >= 1.0 means nanolens is no
worse. Both sides of a row are timed in alternating order (A B, B A, ...) after a warm-up; the
ratio is the median of the per-round ratios, with their IQR. Nothing here asserts on a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from nanolens.models import GPT

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import Row, Side, header, interleaved, paired_ratios, ratio_text, table, timed  # noqa: E402

SHAPES = {
    "4L/128": dict(n_layer=4, n_head=4, n_embd=128, vocab_size=65, n_positions=256, fwd=(12, 64), train=(12, 64)),
    "12L/768": dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, n_positions=1024, fwd=(4, 128), train=(2, 128)),
}
QUICK_SHAPES = {
    "4L/128": SHAPES["4L/128"],
    "2L/256 (quick)": dict(n_layer=2, n_head=4, n_embd=256, vocab_size=4096, n_positions=256, fwd=(2, 32), train=(2, 32)),
}


@dataclass
class Pair:
    name: str
    hf: object
    ours: object
    directory: Path
    config: dict


def build_pair(name: str, shape: dict, root: Path, device: str, dtype: torch.dtype) -> Pair:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=shape["vocab_size"], n_positions=shape["n_positions"], n_embd=shape["n_embd"],
        n_layer=shape["n_layer"], n_head=shape["n_head"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=0, eos_token_id=0)
    hf = GPT2LMHeadModel(config).eval()
    directory = root / name.replace("/", "_").replace(" ", "")
    hf.save_pretrained(directory)
    ours = GPT.from_hf(hf, dtype=dtype, device=device)
    hf = hf.to(device=device, dtype=dtype)
    return Pair(name, hf, ours, directory, shape)


def sync(device: str) -> Callable[[], None]:
    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def two_sided(args, ours: Callable[[], object], theirs: Callable[[], object], rounds: int) -> tuple[list[float], list[float]]:
    done = sync(args.device)

    def wrap(fn):
        return Side(lambda: (fn(), done()))

    sides = (wrap(ours), wrap(theirs))
    for _ in range(args.warmup):
        for s in sides:
            timed(s.run)
    return tuple(interleaved(*sides, rounds=rounds))


def speed_row(what: str, work: float, unit: str, t_ours: list[float], t_theirs: list[float], note: str = "") -> Row:
    ratios = paired_ratios(t_theirs, t_ours)  # throughput ratio ours / theirs = their time / our time
    fmt = (lambda t: f"{work / statistics.median(t):,.0f}") if work / statistics.median(t_ours) >= 100 else (
        lambda t: f"{work / statistics.median(t):,.1f}")
    return Row(what=what + note, ours=fmt(t_ours) + unit, reference=fmt(t_theirs) + unit,
               ratio_text=ratio_text(ratios), goal=">= 1.0", met=statistics.median(ratios) >= 1.0)


def bench_forward(args, pair: Pair) -> Row:
    batch, seq = pair.config["fwd"]
    ids = torch.randint(0, pair.config["vocab_size"], (batch, seq), device=args.device)

    @torch.no_grad()
    def ours():
        for _ in range(args.fwd_iters):
            pair.ours(ids)

    @torch.no_grad()
    def theirs():
        for _ in range(args.fwd_iters):
            pair.hf(ids)

    t_ours, t_theirs = two_sided(args, ours, theirs, args.rounds)
    return speed_row(f"{pair.name} forward, no_grad, batch {batch}x{seq}", args.fwd_iters * batch * seq, " tok/s",
                     t_ours, t_theirs)


def bench_train(args, pair: Pair) -> Row:
    batch, seq = pair.config["train"]
    gen = torch.Generator().manual_seed(0)
    data = torch.randint(0, pair.config["vocab_size"], (batch, seq + 1), generator=gen).to(args.device)
    x, y = data[:, :-1], data[:, 1:]
    ours_model, hf_model = pair.ours, pair.hf
    opt_ours = torch.optim.AdamW(ours_model.parameters(), lr=1e-4)
    opt_theirs = torch.optim.AdamW(hf_model.parameters(), lr=1e-4)

    def ours():
        ours_model.train()
        for _ in range(args.train_steps):
            loss = ours_model(x, return_type="loss", targets=y)
            opt_ours.zero_grad(set_to_none=True)
            loss.backward()
            opt_ours.step()
        ours_model.eval()

    def theirs():
        hf_model.train()
        for _ in range(args.train_steps):
            logits = hf_model(x).logits  # the loss computed the same way on both sides
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            opt_theirs.zero_grad(set_to_none=True)
            loss.backward()
            opt_theirs.step()
        hf_model.eval()

    t_ours, t_theirs = two_sided(args, ours, theirs, args.train_rounds)
    return speed_row(f"{pair.name} training step (fwd+bwd+AdamW), batch {batch}x{seq}",
                     args.train_steps * batch * seq, " tok/s", t_ours, t_theirs)


def bench_decode(args, pair: Pair, rows: int, sample: bool) -> Row:
    prompt = torch.randint(1, pair.config["vocab_size"], (rows, 4), generator=torch.Generator().manual_seed(1))
    prompt = prompt.to(args.device)
    n = args.decode_tokens
    out = {}
    hf_kwargs = dict(max_new_tokens=n, min_new_tokens=n, eos_token_id=None, pad_token_id=0,
                     attention_mask=torch.ones_like(prompt))
    if sample:
        def ours():
            out["ours"] = pair.ours.generate(prompt, n, temperature=1.0, top_k=50, seed=0)

        def theirs():
            out["theirs"] = pair.hf.generate(prompt, do_sample=True, temperature=1.0, top_k=50, top_p=1.0, **hf_kwargs)
    else:
        def ours():
            out["ours"] = pair.ours.generate(prompt, n, temperature=0)

        def theirs():
            out["theirs"] = pair.hf.generate(prompt, do_sample=False, **hf_kwargs)

    t_ours, t_theirs = two_sided(args, ours, theirs, args.decode_rounds)
    note = ""
    if not sample:
        note = "; same tokens" if torch.equal(out["ours"].cpu(), out["theirs"].cpu()) else " [TOKENS DIFFER]"
    kind = f"sampled decode (T=1, top-k 50), {rows} rows" if sample else "greedy decode, KV cache, batch 1"
    return speed_row(f"{pair.name} {kind}, {n} new tokens", rows * n, " tok/s", t_ours, t_theirs, note)


# ---- peak RSS of loading, each side in its own process -------------------------------------------
def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure_load(side: str, directory: str) -> None:
    """(subprocess) Import both libraries, note the RSS, load, run one forward; print the peaks."""
    try:  # reset the high-water mark, so import-time peaks do not count (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    baseline = _status_kb("VmRSS")
    if side == "ours":
        model = GPT.from_hf(directory)
        run = lambda ids: model(ids)  # noqa: E731
    else:
        model = AutoModelForCausalLM.from_pretrained(directory)
        run = lambda ids: model(ids).logits  # noqa: E731
    loaded = _status_kb("VmHWM")
    with torch.no_grad():
        run(torch.zeros(1, 16, dtype=torch.long))
    params = sum(p.numel() for p in dict(model.named_parameters()).values())
    print(json.dumps({"baseline_kb": baseline, "loaded_kb": loaded, "peak_kb": _status_kb("VmHWM"), "params": params}))


def load_rss(directory: Path, side: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error"}
    proc = subprocess.run([sys.executable, __file__, "--measure-load", side, str(directory)],
                          capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"loading with {side} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_load(args, pair: Pair) -> Row:
    """The row: the rise of peak RSS over the imports through loading and a first forward (the
    memory a usable model holds). transformers maps the safetensors file and its pages become
    resident only as they are first read, so load-only peaks (in the note) say little alone."""
    weights_mb = sum(p.stat().st_size for p in pair.directory.glob("*.safetensors")) / 2**20
    results: dict[str, list[dict]] = {"ours": [], "theirs": []}
    for r in range(args.load_rounds):
        for side in (("ours", "theirs") if r % 2 == 0 else ("theirs", "ours")):
            results[side].append(load_rss(pair.directory, side))

    def rise(side: str, key: str = "peak_kb") -> list[float]:
        return [(m[key] - m["baseline_kb"]) / 1024 for m in results[side]]

    med = lambda side, key="peak_kb": statistics.median(rise(side, key))  # noqa: E731
    ratios = paired_ratios(rise("theirs"), rise("ours"))
    args.notes.append(
        f"{pair.name} load: safetensors weights {weights_mb:,.0f} MB ({results['ours'][0]['params']:,} parameters), "
        f"imports {statistics.median(m['baseline_kb'] for m in results['ours']) / 1024:,.0f} MB. Rise of peak RSS "
        f"after loading only: {med('ours', 'loaded_kb'):,.0f} MB ours ({med('ours', 'loaded_kb') / weights_mb:.2f}x the "
        f"weights), {med('theirs', 'loaded_kb'):,.0f} MB transformers ({med('theirs', 'loaded_kb') / weights_mb:.2f}x: "
        f"its parameters are the mapped file, paged in on first use); after a first forward: {med('ours'):,.0f} MB ours "
        f"({med('ours') / weights_mb:.2f}x), {med('theirs'):,.0f} MB transformers ({med('theirs') / weights_mb:.2f}x)."
    )
    return Row(what=f"{pair.name} load + first forward: rise of peak RSS over the imports (lower is better)",
               ours=f"{med('ours'):,.0f} MB", reference=f"{med('theirs'):,.0f} MB", ratio_text=ratio_text(ratios),
               goal=">= 1.0 (theirs/ours)", met=statistics.median(ratios) >= 1.0)


# ---- driver ------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: a small second shape, tiny repeats")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as the other benchmarks)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--dtype", default="float32", help="float32 (default) or bfloat16 (for a GPU)")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds of the forward rows (default 12)")
    p.add_argument("--train-rounds", type=int, default=None, help="rounds of the training rows (default 8)")
    p.add_argument("--decode-rounds", type=int, default=None, help="rounds of the decode rows (default 8)")
    p.add_argument("--load-rounds", type=int, default=None, help="subprocess loads per side (default 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed repeats of each side first (default 1)")
    p.add_argument("--fwd-iters", type=int, default=None, help="forwards per timed trial (default 4)")
    p.add_argument("--train-steps", type=int, default=None, help="training steps per timed trial (default 2)")
    p.add_argument("--decode-tokens", type=int, default=None, help="new tokens per generation (default 128)")
    p.add_argument("--out", type=Path, default=None, help="also write the header and table as markdown here")
    p.add_argument("--measure-load", nargs=2, metavar=("SIDE", "DIR"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.notes = []
    defaults = dict(rounds=(2, 12), train_rounds=(2, 8), decode_rounds=(2, 8), load_rounds=(1, 3), warmup=(1, 1),
                    fwd_iters=(1, 4), train_steps=(1, 2), decode_tokens=(16, 128))
    for name, (quick, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.measure_load:
        torch.set_num_threads(1)
        measure_load(*args.measure_load)
        return 0
    torch.set_num_threads(args.threads)

    transformers.logging.set_verbosity_error()
    dtype = getattr(torch, args.dtype)
    head = header(args)
    head[0] = head[0].replace("bench_model", "bench_hf: nanolens vs transformers " + transformers.__version__)
    head.append(f"device {args.device}, dtype {args.dtype}; random GPT-2 weights, the same on both sides")
    for line in head:
        print(line, flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_hf-") as root:
        for name, shape in (QUICK_SHAPES if args.quick else SHAPES).items():
            print(f"... {name}: building", file=sys.stderr, flush=True)
            pair = build_pair(name, shape, Path(root), args.device, dtype)
            for what, bench in (("forward", bench_forward), ("training", bench_train),
                                ("greedy decode", lambda a, p: bench_decode(a, p, 1, False)),
                                ("sampled decode", lambda a, p: bench_decode(a, p, 16, True)),
                                ("load", bench_load)):
                print(f"... {name}: {what}", file=sys.stderr, flush=True)
                rows.append(bench(args, pair))
            del pair
    lines = table(rows) + ([""] + args.notes if args.notes else [])
    print()
    print("\n".join(lines))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(["# " + head[0], "", *(f"{h}  " for h in head[1:]), "", *lines, ""]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
