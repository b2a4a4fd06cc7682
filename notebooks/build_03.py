"""Writes notebooks/03_steering.ipynb (nbformat): `python notebooks/build_03.py [REPO_ROOT]`."""

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]

cells = []
md = lambda s: cells.append(new_markdown_cell(s.strip("\n")))
code = lambda s: cells.append(new_code_cell(s.strip("\n")))

md(r"""
# 03 · Steering: make the stories happier or sadder with vector arithmetic

The probing notebook found *where* the model keeps a story's sentiment. Here we use it: take a **direction** in the residual stream that separates happy from sad stories, **add** it while the model writes, and **measure** what happens.

1. find the sentiment direction five ways (contrast pair, mean difference, PCA, probe, and a random control), all returning one `SteeringVector`;
2. do arithmetic with them (`happy - sad`, `2.5 * v`, cosines), save and load them;
3. steer generation, at all positions, the prompt only, generated tokens only or the first k positions, and check that it is exactly the same with and without the KV cache;
4. measure it: the share of continuations scored positive against the coefficient, with the fluency cost, on held-out story openings no direction was found on.
""")

code(r"""
import os

# Parameters (environment variables, so the test suite can run this notebook quickly):
#   NANOLENS_CKPT=runs/NAME/best    use a model you trained (`nanolens train --out runs/NAME`, or `nanolens demo`)
#   NANOLENS_NOTEBOOK_QUICK=1       train a tiny model for a few seconds instead (what the tests do)
# With neither, a small model is trained once on the sentiment corpus (a few minutes on a laptop
# CPU) and kept in NANOLENS_NOTEBOOK_RUN (default runs/notebook_sentiment), shared with the probing
# notebook; a quick model is kept apart, in its quick/ subfolder.
QUICK = os.environ.get("NANOLENS_NOTEBOOK_QUICK", "0") == "1"
CKPT = os.environ.get("NANOLENS_CKPT") or None
RUN_DIR = os.environ.get("NANOLENS_NOTEBOOK_RUN", "runs/notebook_sentiment")
print(f"QUICK={QUICK}, CKPT={CKPT}, RUN_DIR={RUN_DIR}")
""")

code(r"""
import torch
from IPython.display import Image, display

from nanolens.models import GPT, CharTokenizer, preset_config
from nanolens.training.batches import TokenData
from nanolens.corpora.sentiment import generate_corpus, neutral_openings
from nanolens.training import Trainer, TrainConfig

if QUICK:
    torch.set_num_threads(1)  # tiny models run fastest on one thread

# a quick model for this notebook needs a context that holds a story's first two sentences
run = os.path.join(RUN_DIR, "quick_steering") if QUICK else RUN_DIR
if CKPT:
    model = GPT.load(CKPT)
elif os.path.isfile(os.path.join(run, "best", "config.json")):
    model = GPT.load(os.path.join(run, "best"))
    print(f"loaded the model trained earlier in {run}")
else:
    corpus = generate_corpus(200_000 if QUICK else 1_000_000, seed=0)
    tokenizer = CharTokenizer.from_text(corpus.text)
    size = dict(n_layer=2, n_head=4, n_embd=32, block_size=64) if QUICK else dict(n_layer=4, n_head=4, n_embd=128, block_size=128)
    torch.manual_seed(0)
    model = GPT(preset_config("gpt2", vocab_size=tokenizer.vocab_size, **size), tokenizer)
    train_config = TrainConfig(
        max_iters=150 if QUICK else 2000, batch_size=16 if QUICK else 12, learning_rate=3e-3 if QUICK else 1e-3,
        warmup_iters=10 if QUICK else 100, eval_interval=0 if QUICK else 500, eval_iters=5 if QUICK else 50,
        sample_interval=0, progress=not QUICK, verbose=not QUICK, plot=not QUICK, device="cpu" if QUICK else "auto",
    )
    Trainer(model, TokenData.from_text(corpus.text, tokenizer), train_config, out_dir=run).train()
model = model.eval()
block, n_layer = model.config.block_size, model.config.n_layer
LAYER = n_layer // 2          # steer the residual stream entering this block
print(f"{model.num_params():,} parameters, {n_layer} layers, d_model {model.config.n_embd}, context {block}; steering layer {LAYER}")
""")

md(r"""
## Five ways to find a direction

All five return a `SteeringVector` at `blocks.{LAYER}.hook_resid_pre`, with its provenance and the layer's *typical residual norm* (so that `relative=True` coefficients mean the same for every method).

* **contrast pair** (ActAdd): the activation difference of two prompts, position by position;
* **mean difference** (CAA): mean activation of positive texts minus negative ones;
* **PCA** (RepE / repeng): the first principal component of *paired* differences. Centring is a choice: we do **not** centre, because the mean difference is exactly the signal the pairs share (see `pca_direction`'s docstring); `center=True` gives repeng's `pca_diff`;
* **probe**: the weight vector of a logistic-regression probe;
* **random**: a random direction of the same norm: the control.

`sentiment_pairs` makes matched pairs: the same story beginning generated once as positive and once as negative, so they differ only in the sentiment words. Reading the mean over the sentence that reveals the label (its last sentence) keeps both the words and what the model made of them.
""")

code(r"""
from nanolens.probes import LinearProbe, extract_activations
from nanolens.steering import contrast_pair, mean_difference, pca_direction, probe_direction, random_direction, sentiment_pairs, hook_name
from nanolens.apps.demo.directions import reveal_spans

pos, neg = sentiment_pairs(32 if QUICK else 256, max_chars=block)
print("positive:", repr(pos[0][-70:]))
print("negative:", repr(neg[0][-70:]))
read = reveal_spans(pos, model.tokenizer) + reveal_spans(neg, model.tokenizer)       # the mean over each text's last sentence

hook = hook_name(model, LAYER)
acts = extract_activations(model, pos + neg, hooks=[hook], positions=read, progress=False)
probe = LinearProbe().fit(acts[hook], ["positive"] * len(pos) + ["negative"] * len(neg))

vectors = {
    "contrast_pair": contrast_pair(model, "The sky was bright and she felt happy.", "The sky was grey and she felt sad.", LAYER, position="mean"),
    "mean_difference": mean_difference(model, pos, neg, LAYER, position=read),
    "pca": pca_direction(model, pos, neg, LAYER, position=read),
    "probe": probe_direction(probe, model, LAYER),
}
vectors["random"] = random_direction(like=vectors["mean_difference"], seed=0)
scale = vectors["mean_difference"].scales[hook]
for v in vectors.values():
    v.scales = {hook: scale}          # one typical norm for the layer, for every method
    print(f"{v.label:>16}: norm {v.norm:7.3f}   centring: {v.provenance.get('centring')}")
print(f"typical residual norm at {hook}: {scale:.3f}")
""")

md(r"""
## Vector arithmetic

Directions are vectors: differences, sums and multiples are computed hook by hook, and compositions equal the direct computation. Vectors of different models or widths refuse to mix.
""")

code(r"""
from nanolens.steering import SteeringVector, cosine_table, top_tokens, format_top_tokens

openers = [t[: t.index(".") + 1] for t in pos]          # the neutral opening sentences
happy_vs_neutral = mean_difference(model, pos, openers, LAYER, position="mean")
sad_vs_neutral = mean_difference(model, neg, openers, LAYER, position="mean")
direct = mean_difference(model, pos, neg, LAYER, position="mean")
composed = happy_vs_neutral - sad_vs_neutral
print("max |(happy - neutral) - (sad - neutral) - (happy - sad)| =", float((composed[hook] - direct[hook]).abs().max()))
print("cosine(2.5 * v, v) =", (2.5 * direct).cosine(direct), "  cosine(-v, v) =", (-direct).cosine(direct))

path = vectors["mean_difference"].save(os.path.join(run, "vectors", "happy"))
print("saved", path, "->", SteeringVector.load(path).allclose(vectors["mean_difference"]))

display(cosine_table(vectors).round(2))
print(format_top_tokens(top_tokens(model, vectors["mean_difference"], k=8, ln_final=True)))
""")

md(r"""
## Steering, with and without the KV cache

`steer(model, v, coeff, positions, relative)` is a context manager; `generate(..., steering=Steering(...))` does the same. With the KV cache, after the prompt only the newest token passes through the model, so a hook sees `[batch, 1, d]`: the steering tracks text positions across cached steps, and its report shows it fired on every step.

The prompts are held-out neutral openings: never in the training text, and not used to find any direction.
""")

code(r"""
from nanolens.steering import Steering, steer
from nanolens.tables import side_by_side

C = 0.5                                  # x the layer's typical residual norm
prompts = [o if len(o) < block - 8 else o[-(block - 8):] for o in neutral_openings(12, seed=7)]
v = vectors["mean_difference"]
for prompt in prompts[:2]:
    outs = {}
    for c in (-C, 0.0, C):
        s = Steering(v, coeff=c, relative=True)
        outs[c] = model.generate(prompt, max_new_tokens=60 if not QUICK else 24, temperature=0.8, seed=1, stop="\n", steering=s)[len(prompt):]
    print(repr(prompt))
    print(side_by_side([(f"coeff {-C:+g}", outs[-C]), ("unsteered", outs[0.0]), (f"coeff {C:+g}", outs[C])], width=34))
    print()
print(s.report())
""")

code(r"""
# Greedy steered generation gives the same tokens with and without the KV cache, in every mode,
# and the report shows which text positions each mode touched.
x = model.to_tokens(prompts[0])
P, N = x.shape[1], 12
for mode in ("all", "prompt", "generated", 3):
    runs = {}
    for cache in (True, False):
        s = Steering(4 * v, positions=mode, relative=False)
        runs[cache] = (model.generate(x, max_new_tokens=N, temperature=0, use_kv_cache=cache, steering=s), s.report())
    same = torch.equal(runs[True][0], runs[False][0])
    touched = sorted(runs[True][1].text_positions.get(hook, []))
    span = f"{touched[0]}..{touched[-1]}" if touched else "none"
    print(f"{str(mode):>9}: identical with/without cache: {same}; text positions {span} (prompt is 0..{P - 1}); "
          f"fired in {runs[True][1].calls.get(hook, 0)} of {N} cached passes")
""")

md(r"""
## Measuring it

`sweep` generates several samples of every prompt at every coefficient for every method (all settings as rows of one batch) and scores the continuations with the corpus' own sentiment word lists. `frac_positive` is the share of continuations scored positive; `perplexity` is the fluency cost (the continuations' perplexity under the *unsteered* model); `wrong_way` the share of prompts moved against the coefficient's sign.
""")

code(r"""
from nanolens.steering import sweep, plot_sentiment_vs_coeff, plot_layer_heatmap, summarize_sweep
from nanolens.tables import text_table

coeffs = [-2 * C, -C, 0.0, C, 2 * C]
df = sweep(model, prompts, vectors, coeffs, samples_per_prompt=2 if QUICK else 4, max_new_tokens=24 if QUICK else 64,
           seed=0, progress=False)
print(text_table(df, ["method", "layer", "coeff", "mean_sentiment", "frac_positive", "wrong_way", "perplexity"]))
display(Image(filename=str(plot_sentiment_vs_coeff(df, os.path.join(run, "steering_vs_coeff.png")))))
print(text_table(summarize_sweep(df), ["method", "frac_pos_at_neg", "frac_pos_unsteered", "frac_pos_at_pos", "ppl_at_pos", "max_move"]))
""")

code(r"""
# Which layer steers best? The mean difference at every layer, as a layer x coefficient map.
by_layer = {L: mean_difference(model, pos, neg, L, position=read) for L in range(n_layer)}
heat = sweep(model, prompts[:4], {"mean_difference": by_layer}, [-C, C], samples_per_prompt=2, relative=True,
             max_new_tokens=24 if QUICK else 48, progress=False)
display(Image(filename=str(plot_layer_heatmap(heat, os.path.join(run, "heatmap.png"), "mean_difference"))))
""")

md(r"""
## Two directions at once

A second property of the corpus, independent of the sentiment: the hero's gender. `gender_pairs` tells the same story once with a heroine and once with a hero; their mean difference is a gender direction, and `.without(sentiment)` removes its component along the sentiment direction. `grid_settings` adds both at every combination of coefficients, and `evaluate_settings` scores each continuation for both properties: its sentiment, and the gender of its first pronoun (`pronoun_gender`).
""")

code(r"""
from nanolens.corpora.sentiment import pronoun_gender
from nanolens.steering import evaluate_settings, gender_pairs, grid_settings

women, men = gender_pairs(32 if QUICK else 128)
gender = mean_difference(model, women, men, n_layer - 1, position="mean")   # read over whole stories
sentiment_there = mean_difference(model, pos, neg, n_layer - 1, position=read)
print("cosine(gender, sentiment) before:", round(gender.cosine(sentiment_there), 3), end="; ")
gender = gender.without(sentiment_there)
print("after .without():", round(gender.cosine(sentiment_there), 6))
settings = grid_settings({"sentiment": v, "gender": gender}, {"sentiment": [-C, 0.0, C], "gender": [-C, 0.0, C]})
both = evaluate_settings(model, prompts, settings, {"positive": "words", "female": pronoun_gender},
                         samples_per_prompt=2 if QUICK else 4, max_new_tokens=24 if QUICK else 48, progress=False)
print(text_table(both, ["setting", "positive_frac_positive", "female_frac_positive", "perplexity"]))
""")

md(r"""
## Bad input gets a clear error
""")

code(r"""
from nanolens.steering import SteeringError

def show(what, fn):
    try:
        fn()
    except (SteeringError, ValueError) as err:
        print(f"{what}: {type(err).__name__}: {err}")

show("layer out of range", lambda: mean_difference(model, pos, neg, n_layer + 3))
show("non-finite coefficient", lambda: Steering(v, coeff=float("nan")))
show("empty prompt", lambda: contrast_pair(model, "", "sad", LAYER))
other = GPT(model.config, tokenizer=model.tokenizer)          # same shape, other weights
show("vector from another model", lambda: steer(other, v).__enter__())
show("misspelled hook", lambda: steer(model, SteeringVector({hook[:-1]: v[hook]})).__enter__())
""")

md(r"""
## From here

* `nanolens demo` runs this whole story (train, probe, five directions, layer selection, held-out evaluation) and writes `report.md` with plots.
* `nanolens steer --ckpt runs/NAME --positive "happy" --negative "sad" --layer 2 --coeff 4 --read mean --prompt "..."` prints unsteered and steered text side by side; `--method mean-diff --dataset sentiment --sweep --relative` writes the table and plots.
""")

nb = new_notebook(cells=cells, metadata={"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                                         "language_info": {"name": "python"}})
nbformat.write(nb, str(ROOT / "notebooks" / "03_steering.ipynb"))
print("wrote", ROOT / "notebooks" / "03_steering.ipynb", f"({len(cells)} cells)")
