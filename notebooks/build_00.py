"""Build `notebooks/00_simple_to_complex.ipynb`, the course notebook: the ladder as a lesson.

    python notebooks/build_00.py            # (re)write the notebook next to this script
    python notebooks/build_00.py --check    # exit 1 if the notebook differs from what this builds

The notebook is generated (with nbformat, unexecuted, deterministic cell ids) so it can be edited
here as code and regenerated; the test suite executes it with NANOLENS_NOTEBOOK_QUICK=1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "00_simple_to_complex.ipynb"

INTRO = """\
# 00 · From a bigram to a GPT, one idea at a time

A GPT is a stack of a few ideas. This notebook adds them one at a time, the *simple-to-complex
ladder* of nanolens' presets, and trains every rung on the same text with the same budget, so
you can see what each idea buys:

`bigram` → `average` → `one_head` → `multi_head` → `feed_forward` → `deep` → `residual` → `layer_norm` → `gpt2` → `modern`

Every rung is the same `GPT` class with a different `GPTConfig` (`preset_config(name)`); only the
named idea changes between neighbours. Each rung below says in two sentences what its new piece
does, prints which config fields changed, trains, and prints its validation loss and a sample.
The loss is cross-entropy in nats per character: a model that guesses uniformly among the ~65
characters scores ln 65 ≈ 4.17, and nanoGPT's full recipe reaches about 1.88 on this text.

The budget is small so the whole ladder runs on a laptop CPU in a few minutes (see
`benchmarks/ladder.py` for the same comparison at a larger budget). Set
`NANOLENS_NOTEBOOK_QUICK=1` to shrink it to seconds (what the test suite does)."""

SETUP = """\
%matplotlib inline
import dataclasses
import os
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm's notebook bar; the trainer's bar is off here

import torch

from nanolens.models import GPT, preset_config
from nanolens.training.batches import TokenData
from nanolens.corpora import CorpusError, load_corpus, shakespeare_path
from nanolens.models.tokenizers import build_tokenizer
from nanolens.training import Trainer, TrainConfig

QUICK = os.environ.get("NANOLENS_NOTEBOOK_QUICK", "0") == "1"
torch.set_num_threads(1)  # small models: one thread is fastest, and robust when other programs share the CPU

if QUICK:   # seconds: a narrow model, a short context, a few dozen steps on the first 100k characters
    N_EMBD, BLOCK, BATCH, ITERS, EVAL_ITERS, SAMPLE_CHARS, SIZE = 32, 32, 8, 40, 4, 60, 100_000
else:       # minutes: the width and context of nanoGPT's CPU recipe, a few hundred steps per rung
    N_EMBD, BLOCK, BATCH, ITERS, EVAL_ITERS, SAMPLE_CHARS, SIZE = 128, 64, 12, 400, 50, 200, None
SEED = 1337

# Tiny Shakespeare if this machine has it (NANOLENS_DATA, the user cache, or a download), else the
# embedded sentiment stories, which need nothing.
try:
    path = shakespeare_path(download=not QUICK)
    corpus = load_corpus(str(path), size=SIZE)
    corpus_name = "tiny Shakespeare"
except CorpusError as err:
    print(f"(no tiny Shakespeare: {str(err).split(';')[0]}; using the sentiment stories instead)")
    corpus = load_corpus("sentiment", size=SIZE or 1_000_000)
    corpus_name = "the sentiment stories"
tokenizer = build_tokenizer("char", corpus.text)
data = TokenData.from_text(corpus.text, tokenizer, val_fraction=0.1)
print(f"{corpus_name}: {len(corpus.text):,} characters, {tokenizer.vocab_size} distinct; {data!r}")
print(f"every rung: n_embd {N_EMBD}, block {BLOCK}, batch {BATCH}, {ITERS} iterations")"""

HELPERS = """\
import matplotlib.pyplot as plt

results = {}        # rung name -> {"params", "val_loss", "train_loss", "sample"}
_previous = [None]  # the config of the rung trained last, to show what changed


def changes(old, new):
    \"\"\"The config fields that differ between two rungs.\"\"\"
    if old is None:
        return "(the first rung)"
    diff = [f"{f.name}: {getattr(old, f.name)!r} -> {getattr(new, f.name)!r}"
            for f in dataclasses.fields(new) if f.name != "preset" and getattr(old, f.name) != getattr(new, f.name)]
    return "; ".join(diff) or "(nothing)"


def train_rung(name):
    \"\"\"Build the preset, train it with the shared budget, report its val loss and a sample.\"\"\"
    config = preset_config(name, vocab_size=tokenizer.vocab_size, n_embd=N_EMBD, block_size=BLOCK)
    print(f"changed from the previous rung: {changes(_previous[0], config)}")
    _previous[0] = config
    torch.manual_seed(SEED)                         # the same initial draw for every rung
    model = GPT(config, tokenizer=tokenizer)
    train_config = TrainConfig(
        batch_size=BATCH, block_size=BLOCK, max_iters=ITERS, learning_rate=1e-3, min_lr=1e-4,
        warmup_iters=max(1, ITERS // 20), eval_interval=0, eval_iters=EVAL_ITERS, sample_interval=0,
        save_checkpoints=False, plot=False, progress=False, verbose=False, seed=SEED, device="cpu",
    )
    # The same seed means the same training batches in the same order, and the same eval batches.
    summary = Trainer(model, data, train_config).train()
    sample = model.generate("\\n", max_new_tokens=SAMPLE_CHARS, temperature=0.8, seed=SEED)
    results[name] = dict(params=model.num_params(), val_loss=summary["val_loss"], train_loss=summary["train_loss"], sample=sample)
    names = list(results)
    gain = ""
    if len(names) > 1:
        before = results[names[-2]]["val_loss"]
        gain = f"  ({before - summary['val_loss']:+.3f} against {names[-2]})"
    print(f"{name}: {model.num_params():,} parameters, val loss {summary['val_loss']:.3f}{gain}, "
          f"train loss {summary['train_loss']:.3f}")
    print("sample:" + sample)
    new = [line.strip() for line in str(model).splitlines() if line.strip() not in _previous_tree[0]]
    print("modules this rung adds:", "; ".join(dict.fromkeys(n.split(":")[0].split("(")[0] for n in new if n and n != ")")) or "none")
    _previous_tree[0] = {line.strip() for line in str(model).splitlines()}
    show_attention(model)
    return model


_previous_tree = [set()]


def show_attention(model, prompt="\\nFirst Citizen:\\nBefore we"):
    \"\"\"Every head's attention pattern on a short prompt (rows: the reading position; columns:
    the position read), for the rungs that have attention.\"\"\"
    hooks = [f"blocks.{i}.attn.hook_pattern" for i in range(model.config.n_layer) if f"blocks.{i}.attn.hook_pattern" in model.hook_dict]
    text = "".join(c for c in prompt if c in tokenizer.stoi)[: model.config.block_size]
    if not hooks or len(text) < 2:
        return
    with torch.no_grad():
        _, cache = model.run_with_cache(text, names_filter=hooks[:1])
    pattern = cache[hooks[0]][0]  # layer 0: [head, query, key]
    fig, axes = plt.subplots(1, pattern.shape[0], figsize=(2.2 * pattern.shape[0], 2.4), squeeze=False)
    labels = [repr(c)[1:-1] for c in text]
    for h, ax in enumerate(axes[0]):
        ax.imshow(pattern[h].numpy(), cmap="Blues", vmin=0, vmax=1)
        ax.set_title(f"layer 0, head {h}", fontsize=8)
        ax.set_xticks(range(len(labels)), labels, fontsize=6)
        ax.set_yticks(range(len(labels)), labels, fontsize=6)
    fig.tight_layout()
    plt.show()"""

# (preset, heading, the two sentences of the lesson)
RUNGS = [
    ("bigram", "A lookup table",
     "The simplest language model is a table: the current character picks a row of logits that says how "
     "likely each next character is (an embedding row, scored against every next character by a separate "
     "unembedding, so `a -> b` and `b -> a` can differ). It has no memory at all: it can learn that `q` is "
     "followed by `u`, but nothing before the current character can inform it."),
    ("average", "Averaging the past",
     "The cheapest way to use context is to let each position take the average of the embeddings of every "
     "character up to it (never after it: the future is what we predict), so a position now knows which "
     "characters came before. But an average is a set, blind to order, which is why positions need encoding: "
     "a learned position vector is added to each embedding, or `dog` and `god` would look the same."),
    ("one_head", "One attention head",
     "Self-attention replaces the uniform average by a weighted one: each position emits a query, every "
     "earlier position a key, and their softmaxed dot products decide how much of each value to read. "
     "A position can now read mostly the previous character, or the last space, instead of a blur of everything."),
    ("multi_head", "Several heads",
     "The same width is split into four heads of a quarter size, each with its own queries and keys, and "
     "their outputs are concatenated. One head can track the previous character while another finds the "
     "start of the word; the price is that each head's view is narrower."),
    ("feed_forward", "A feed-forward layer",
     "Attention only moves information between positions; an MLP applied at every position then computes "
     "on what was gathered (a hidden layer four times wider, with a ReLU). This is where most of a "
     "transformer's parameters, and much of what it knows, live."),
    ("deep", "Depth alone",
     "Stacking four of those blocks should let later blocks build on what earlier ones computed. But here each "
     "block's output *replaces* its input, so every gradient must pass through all four blocks and each block "
     "must re-encode everything it passes on: a deep stack of plain layers trains slowly, if at all."),
    ("residual", "Depth, through residual connections",
     "The same four blocks, with one change: each block *adds* its output to a running stream "
     "(`x = x + block(x)`) instead of replacing it. Gradients now flow straight through the additions to "
     "every block, and each block only has to learn a correction, which is what lets deep stacks train."),
    ("layer_norm", "Layer normalization",
     "LayerNorm rescales each position's vector to zero mean and unit variance before attention and before "
     "the MLP (pre-norm), and once more before the unembedding. With every sub-layer's input at a steady "
     "scale the optimization is better conditioned, so the same learning rate makes faster and safer progress."),
    ("gpt2", "nanoGPT's block (GPT-2)",
     "The one change is GELU in place of ReLU in the MLP, a smooth gate that lets small negative values "
     "through; with it the block is exactly GPT-2's as nanoGPT writes it (learned positions, pre-LayerNorm "
     "with bias, and the unembedding tied to the embedding, which the earlier rungs already had). It is a "
     "refinement rather than a new idea, so expect a small change at this size."),
    ("modern", "A modern block (LLaMA-style)",
     "Today's models rotate queries and keys by their position (RoPE) so attention sees relative offsets, "
     "normalize with the cheaper RMSNorm, and use a gated SwiGLU MLP without biases. Their advantages show "
     "mostly at scale and with long contexts; on a small character model the difference is modest."),
]

POSITIONS_MD = """\
## What a position adds to a token

Attention alone is blind to order, so every rung from `average` on adds a position signal. The three
kinds differ in *what* they add. A **learned** position is a trained vector added to the token's
embedding (below: the `gpt2` rung's `W_pos` after training, one row per position). A **sinusoidal** one
is a fixed vector of sines and cosines at geometric frequencies, so nearby positions get similar vectors
and every offset is a fixed rotation. **Rotary** positions (RoPE, the `modern` rung) add nothing to the
embedding: they rotate each query and key by an angle proportional to the position, so the score of a
query and a key depends only on their offset: the right panel shows how the same vector's dot product
with itself falls and oscillates as the offset between the two positions grows."""

POSITIONS = """\
from nanolens.models.positional import Rotary, SinusoidalPositions

gpt2 = preset_config("gpt2", vocab_size=tokenizer.vocab_size, n_embd=N_EMBD, block_size=BLOCK)
learned = GPT(gpt2)  # its W_pos: trained below if the gpt2 rung ran, else at initialisation
if "gpt2_model" in globals():
    learned = gpt2_model
sinusoidal = SinusoidalPositions(gpt2).W_pos
rotary = Rotary(preset_config("modern", vocab_size=tokenizer.vocab_size, n_embd=N_EMBD, block_size=BLOCK))
q = torch.randn(1, 1, 1, N_EMBD // 4, generator=torch.Generator().manual_seed(0))  # one head's query, [1, 1, 1, d_head]
offsets = torch.arange(BLOCK)
rotated = torch.cat([rotary(q, int(p)) for p in offsets], dim=2)[0, 0]  # the same vector at every position
similarity = (rotated @ rotated[0]) / rotated[0].norm() ** 2

fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
axes[0].imshow(learned.W_pos.detach().numpy(), aspect="auto", cmap="RdBu_r")
axes[0].set_title("learned: W_pos (position x dimension)")
axes[1].imshow(sinusoidal.numpy(), aspect="auto", cmap="RdBu_r")
axes[1].set_title("sinusoidal (position x dimension)")
axes[2].plot(offsets, similarity.numpy())
axes[2].set_title("rotary: q(p) . q(0) / |q|^2 against the offset p")
for ax in axes[:2]:
    ax.set_xlabel("dimension"); ax.set_ylabel("position")
axes[2].set_xlabel("offset between query and key")
fig.tight_layout()
plt.show()"""

SUMMARY = """\
names = list(results)
# The lecture ("Let's build GPT") at its own settings (block 8, batch 32, n_embd 32, 5,000 steps): its
# val losses, for the rungs it has; `python benchmarks/ladder.py --lecture` reproduces them with nanolens.
LECTURE = {"bigram": 2.49, "one_head": 2.4, "multi_head": 2.28, "feed_forward": 2.27, "residual": 2.09, "layer_norm": 2.08}
print(f"{'rung':<13} {'params':>10} {'val loss':>9} {'gain':>8} {'lecture':>8}")
previous = None
for name in names:
    r = results[name]
    gain = "" if previous is None else f"{previous - r['val_loss']:+.3f}"
    lecture = f"~{LECTURE[name]}" if name in LECTURE else ""
    print(f"{name:<13} {r['params']:>10,} {r['val_loss']:>9.3f} {gain:>8} {lecture:>8}")
    previous = r["val_loss"]

fig, ax = plt.subplots(figsize=(8, 4))
ax.plot(names, [results[n]["val_loss"] for n in names], "o-", color="tab:orange", label="val loss")
ax.plot(names, [results[n]["train_loss"] for n in names], "s--", color="tab:blue", alpha=0.6, label="train loss")
ax.set_ylabel("cross-entropy (nats / character)")
ax.set_title(f"The ladder on {corpus_name}: {ITERS} iterations per rung")
ax.tick_params(axis="x", rotation=30)
ax.grid(alpha=0.3)
ax.legend()
fig.tight_layout()
plt.show()"""

OUTRO = """\
## What to take away

- Context is the first big win: every rung that reads the past beats the bigram table, and *choosing*
  what to read (attention) beats averaging it.
- Depth pays only with the plumbing that makes it trainable: residual connections and normalization
  are what turn "more layers" into "better model".
- The last rungs (GELU, tied weights, RoPE, RMSNorm, SwiGLU) are refinements; at this size and budget
  their gains are small and can fall within the noise of one short run. Train longer (`ITERS`) or
  wider (`N_EMBD`) and see which ones grow.

Next: `benchmarks/ladder.py` runs the same comparison at a larger budget and writes a table and a plot;
`nanolens train --preset gpt2` trains one rung properly; notebook 01 opens a trained model up."""


def build() -> nbformat.NotebookNode:
    cells = [new_markdown_cell(INTRO), new_code_cell(SETUP), new_code_cell(HELPERS)]
    for i, (name, heading, lesson) in enumerate(RUNGS):
        cells.append(new_markdown_cell(f"## Rung {i}: {heading} (`{name}`)\n\n{lesson}"))
        cells.append(new_code_cell(f'model = train_rung("{name}")' + ("\ngpt2_model = model" if name == "gpt2" else "")))
    cells.append(new_markdown_cell(POSITIONS_MD))
    cells.append(new_code_cell(POSITIONS))
    cells.append(new_markdown_cell("## All rungs side by side\n\nThe same numbers as above, in one table and one plot, beside "
                                   "the lecture's figures (at its own, smaller settings) where it has the rung."))
    cells.append(new_code_cell(SUMMARY))
    cells.append(new_markdown_cell(OUTRO))
    for i, cell in enumerate(cells):
        cell["id"] = f"cell-{i:02d}"
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def render() -> str:
    return nbformat.writes(build()) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check the notebook is up to date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = NOTEBOOK.read_text(encoding="utf-8") if NOTEBOOK.is_file() else ""
        if current != text:
            print(f"{NOTEBOOK.name} is out of date; run python notebooks/build_00.py", file=sys.stderr)
            return 1
        return 0
    nbformat.validate(build())
    NOTEBOOK.write_text(text, encoding="utf-8")
    print(f"wrote {NOTEBOOK}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
