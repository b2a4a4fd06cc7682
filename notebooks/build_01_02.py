"""Writes notebooks/01_hooks_and_cache.ipynb and notebooks/02_probing_sentiment.ipynb (nbformat)."""

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]

PARAMS = '''\
import os

# Parameters (environment variables, so the test suite can run this notebook quickly):
#   NANOLENS_CKPT=runs/NAME/best    use a model you trained (`nanolens train --out runs/NAME`)
#   NANOLENS_NOTEBOOK_QUICK=1       train a tiny model for a few seconds instead (what the tests do)
# With neither, a small model is trained once on the sentiment corpus (a few minutes on a laptop
# CPU) and kept in NANOLENS_NOTEBOOK_RUN (default runs/notebook_sentiment) for the next time
# (and for the other notebook); a quick model is kept apart, in its quick/ subfolder.
QUICK = os.environ.get("NANOLENS_NOTEBOOK_QUICK", "0") == "1"
CKPT = os.environ.get("NANOLENS_CKPT") or None
RUN_DIR = os.environ.get("NANOLENS_NOTEBOOK_RUN", "runs/notebook_sentiment")
print(f"QUICK={QUICK}, CKPT={CKPT}, RUN_DIR={RUN_DIR}")'''

MODEL = '''\
import numpy as np
import torch
import matplotlib.pyplot as plt

from nanolens.models import GPT, CharTokenizer, preset_config
from nanolens.training.batches import TokenData
from nanolens.corpora.sentiment import generate_corpus
from nanolens.training import Trainer, TrainConfig

if QUICK:
    torch.set_num_threads(1)  # tiny models run fastest on one thread

run = os.path.join(RUN_DIR, "quick") if QUICK else RUN_DIR   # a tiny quick model never stands in for a real one
if CKPT:
    model = GPT.load(CKPT)
elif os.path.isfile(os.path.join(run, "best", "config.json")):
    model = GPT.load(os.path.join(run, "best"))
    print(f"loaded the model trained earlier in {run}")
else:
    corpus = generate_corpus(200_000 if QUICK else 1_000_000, seed=0)   # the embedded corpus, as `nanolens train` uses it
    tokenizer = CharTokenizer.from_text(corpus.text)
    size = dict(n_layer=2, n_head=4, n_embd=32, block_size=32) if QUICK else dict(n_layer=4, n_head=4, n_embd=128, block_size=128)
    torch.manual_seed(0)
    model = GPT(preset_config("gpt2", vocab_size=tokenizer.vocab_size, **size), tokenizer)
    train_config = TrainConfig(
        max_iters=150 if QUICK else 2000, batch_size=16 if QUICK else 12, learning_rate=3e-3 if QUICK else 1e-3,
        warmup_iters=10 if QUICK else 100, eval_interval=0 if QUICK else 500, eval_iters=5 if QUICK else 50,
        sample_interval=0, progress=not QUICK, verbose=not QUICK, plot=not QUICK, device="cpu" if QUICK else "auto",
    )
    Trainer(model, TokenData.from_text(corpus.text, tokenizer), train_config, out_dir=run).train()
model = model.eval()
print(f"{model.num_params():,} parameters, {model.config.n_layer} layers, d_model {model.config.n_embd}, "
      f"context {model.config.block_size} characters, on {model.device}")'''


def notebook_01():
    cells = [
        new_markdown_cell(
            "# 01 · Hooks and the activation cache\n\n"
            "Every activation of a nanolens GPT passes through a `HookPoint` named as TransformerLens names it "
            "(`blocks.1.hook_resid_post`, `blocks.0.attn.hook_pattern`, ...). This notebook reads them "
            "(`run_with_cache`), edits them (`run_with_hooks`), and looks at what a trained model does with them: "
            "attention patterns, the logit lens, and what breaks when a layer is ablated.\n\n"
            "The model is a small GPT trained on nanolens' embedded `sentiment` corpus: short stories whose "
            "hidden label (positive / negative) governs every word after a neutral first sentence."
        ),
        new_code_cell(PARAMS),
        new_code_cell(MODEL),
        new_markdown_cell(
            "## The hook points\n\n`model.hook_names()` lists every one. They follow the module tree: "
            "`hook_embed`, `hook_pos_embed`, then per block `hook_resid_pre` → attention → `hook_resid_mid` → "
            "MLP → `hook_resid_post`. A few (`attn.hook_result`, `hook_attn_in`, `hook_q_input` ..., `hook_mlp_in`, "
            "`unembed.hook_in/out`) fire only when switched on (`model.set_use_attn_result(True)`, ...), as in TransformerLens."
        ),
        new_code_cell(
            "names = model.hook_names()\n"
            "print(len(names), 'hook points')\n"
            "for name in names:\n"
            "    if name.startswith('blocks.0.') or not name.startswith('blocks.'):\n"
            "        print(' ', name)\n"
            "print('  ... and the same for blocks 1 ..', model.config.n_layer - 1)"
        ),
        new_markdown_cell(
            "## `run_with_cache`: every activation of one forward pass\n\n"
            "It returns the logits and an `ActivationCache` (a dict of tensors with TransformerLens' helpers). "
            "`names_filter` keeps only what you ask for, which is what you want for anything large."
        ),
        new_code_cell(
            "text = 'One morning, Ada walked to the park. The sky was'[-model.config.block_size:]\n"
            "tokens = model.to_tokens(text)\n"
            "logits, cache = model.run_with_cache(tokens)\n"
            "print('tokens', tuple(tokens.shape), '-> logits', tuple(logits.shape))\n"
            "for name in ['hook_embed', 'blocks.0.hook_resid_post', 'blocks.0.attn.hook_q', 'blocks.0.attn.hook_pattern', 'blocks.0.mlp.hook_post']:\n"
            "    print(f'{name:<28}', tuple(cache[name].shape))\n"
            "\n"
            "_, small = model.run_with_cache(tokens, names_filter=lambda name: name.endswith('hook_resid_post'))\n"
            "print('with a names_filter:', sorted(small.keys()))\n"
            "print(\"TransformerLens' short keys work too:\", tuple(cache['resid_post', 1].shape), tuple(cache['pattern', 0].shape))"
        ),
        new_markdown_cell(
            "`stop_at_layer=L` returns the residual stream entering block `L` and skips the rest: the cheap way "
            "to read early layers of a deep model. `nanolens.probes.extract_activations` uses it."
        ),
        new_code_cell(
            "resid = model(tokens, stop_at_layer=1)\n"
            "print(tuple(resid.shape), torch.allclose(resid, cache['blocks.0.hook_resid_post'], atol=1e-6))"
        ),
        new_markdown_cell(
            "## Attention patterns\n\n`hook_pattern` is `[batch, head, query_pos, key_pos]`: row *q* shows where "
            "position *q* looks. Causal: nothing above the diagonal."
        ),
        new_code_cell(
            "layer = 0\n"
            "pattern = cache['pattern', layer][0]\n"
            "labels = model.to_str_tokens(tokens[0])\n"
            "n_heads = pattern.shape[0]\n"
            "fig, axes = plt.subplots(1, n_heads, figsize=(3.2 * n_heads, 3.4))\n"
            "for h, ax in enumerate(np.atleast_1d(axes)):\n"
            "    ax.imshow(pattern[h].numpy(), cmap='Blues', vmin=0, vmax=1)\n"
            "    ax.set_title(f'layer {layer}, head {h}')\n"
            "    ax.set_xticks(range(len(labels)), labels, fontsize=6)\n"
            "    ax.set_yticks(range(len(labels)), labels, fontsize=6)\n"
            "fig.tight_layout()\n"
            "plt.show()"
        ),
        new_markdown_cell(
            "## The logit lens\n\nRead the residual stream after each layer as if it were the last: apply the "
            "final norm and the unembedding. How often is its top guess already the next character?"
        ),
        new_code_cell(
            "corpus_eval = generate_corpus(20_000, seed=99)\n"
            "block = model.config.block_size\n"
            "starts = np.random.default_rng(0).integers(0, len(corpus_eval.text) - block - 1, size=64)\n"
            "windows = torch.tensor([model.tokenizer.encode(corpus_eval.text[s : s + block + 1]) for s in starts])\n"
            "inputs, targets = windows[:, :-1], windows[:, 1:]\n"
            "_, lens_cache = model.run_with_cache(inputs, names_filter=lambda n: 'resid' in n or n.startswith('ln_final'))\n"
            "stack, stack_labels = lens_cache.accumulated_resid(apply_ln=True, return_labels=True)\n"
            "with torch.no_grad():\n"
            "    lens_logits = model.unembed(stack)            # [layer, batch, pos, vocab]\n"
            "accuracy = (lens_logits.argmax(-1) == targets).float().mean(dim=(1, 2))\n"
            "for label, acc in zip(stack_labels, accuracy):\n"
            "    print(f'{label:>10}: top-1 next-character accuracy {acc:.3f}')\n"
            "plt.figure(figsize=(5, 3))\n"
            "plt.plot(stack_labels, accuracy.numpy(), marker='o')\n"
            "plt.ylabel('top-1 accuracy'); plt.title('logit lens'); plt.grid(alpha=0.3)\n"
            "plt.show()"
        ),
        new_markdown_cell(
            "## `run_with_hooks`: change an activation and watch the loss\n\nA hook receives the activation and "
            "its `HookPoint`, and may return a replacement. Hooks added by `run_with_hooks` (or the `model.hooks(...)` "
            "context manager) are removed afterwards, even on an error."
        ),
        new_code_cell(
            "def zero(activation, hook):\n"
            "    return torch.zeros_like(activation)\n"
            "\n"
            "with torch.no_grad():\n"
            "    clean = model(inputs, return_type='loss').item()\n"
            "    print(f'clean loss {clean:.3f}')\n"
            "    for layer in range(model.config.n_layer):\n"
            "        for part in ('attn_out', 'mlp_out'):\n"
            "            name = f'blocks.{layer}.hook_{part}'\n"
            "            loss = model.run_with_hooks(inputs, return_type='loss', fwd_hooks=[(name, zero)]).item()\n"
            "            print(f'zero {name:<22} loss {loss:.3f}  (+{loss - clean:.3f})')\n"
            "print('hooks left behind:', model.attached_hooks())"
        ),
        new_markdown_cell(
            "A misspelt hook name is an error that suggests the real names, never a silent no-op:"
        ),
        new_code_cell(
            "from nanolens.models import HookNameError\n"
            "try:\n"
            "    model.run_with_hooks(inputs, fwd_hooks=[('blocks.0.hook_resid_pots', zero)])\n"
            "except HookNameError as err:\n"
            "    print(err)"
        ),
        new_markdown_cell(
            "## Hooks during generation\n\n`generate` keeps a KV cache: the prompt runs once, then each step passes "
            "only the newest token, so a hook sees `[batch, 1, d_model]` after the first call. Steering hooks must "
            "handle both shapes."
        ),
        new_code_cell(
            "shapes = []\n"
            "prompt = 'Tom went to the lake.'\n"
            "continuation = model.generate(prompt, max_new_tokens=40, seed=0, temperature=0.8,\n"
            "                              fwd_hooks=[('blocks.0.hook_resid_pre', lambda x, hook: shapes.append(tuple(x.shape)))])\n"
            "print(continuation)\n"
            "print(shapes[:4], '...')  # the prompt, then one token per step (until the text outgrows the context)"
        ),
        new_markdown_cell("Next: `02_probing_sentiment.ipynb` uses these hook points to ask *where* the model knows a story's sentiment."),
    ]
    return cells


def notebook_02():
    cells = [
        new_markdown_cell(
            "# 02 · Probing for sentiment\n\n"
            "Where in the model does it know whether a story is happy or sad? A **linear probe** is a logistic "
            "regression trained on the residual stream at one layer; if it predicts the label on held-out stories, "
            "the label is (linearly) there. Two checks keep this honest:\n\n"
            "* a **control task** (Hewitt & Liang): the same probe on shuffled labels; a probe that scores well "
            "there too is memorising, not reading. *Selectivity* = accuracy − control accuracy.\n"
            "* reading **before** the label is decided (the neutral first sentence): a probe must be at chance.\n\n"
            "Then the probe's weight vector becomes a **direction** in the residual stream (the raw material of "
            "steering), and the probe is run at every position of a story to watch the model make up its mind."
        ),
        new_code_cell(PARAMS),
        new_code_cell(MODEL),
        new_markdown_cell(
            "## The dataset: stories, read where the label has just been decided\n\n"
            "`LabelledTexts.from_sentiment` generates fresh stories (another seed than training's) with their "
            "ground-truth labels. Each text ends at the end of the first sentence that shows the label, so the "
            "last character is where the model must have inferred it."
        ),
        new_code_cell(
            "from nanolens.probes import LabelledTexts, extract_activations, LinearProbe, cosine\n"
            "from nanolens.probes import probe_layers, plot_probe_layers, probe_readout, probe_table\n"
            "\n"
            "N = 200 if QUICK else 2000\n"
            "block = model.config.block_size\n"
            "stories = LabelledTexts.from_sentiment(N, seed=1234, position='reveal', max_chars=block)\n"
            "print(stories)\n"
            "for text, label in list(zip(stories.texts, stories.labels))[:3]:\n"
            "    print(f'{label:>8}: ...{text[-70:]!r}')"
        ),
        new_markdown_cell(
            "## Activations\n\n`extract_activations` caches only the hooks asked for, stops after the deepest, "
            "batches texts of unequal length (causal attention makes right-padding exact), and returns numpy "
            "arrays: one row per text here (`positions='last'`)."
        ),
        new_code_cell(
            "acts = extract_activations(model, stories, hooks=['blocks.0.hook_resid_pre', 'resid_post'], progress=False)\n"
            "print(acts)\n"
            "print('labels:', acts.labels[:6], '... positions read:', acts.position[:6], '...')"
        ),
        new_markdown_cell(
            "## A probe per layer\n\n`probe_layers` fits one probe per layer (plus the embeddings) on 75% of the "
            "stories and scores it on the rest, with the shuffled-label control."
        ),
        new_code_cell(
            "from IPython.display import Image, display\n"
            "\n"
            "df = probe_layers(model, stories, 'resid_post', control='shuffle', progress=False)\n"
            "print(probe_table(df))\n"
            "os.makedirs('probe_plots', exist_ok=True)\n"
            "display(Image(filename=str(plot_probe_layers(df, 'probe_plots/sentiment_reveal.png'))))"
        ),
        new_markdown_cell(
            "The embeddings row sees only the last character (a full stop), so it must be at chance; the label "
            "appears once attention has carried the sentiment word to that position.\n\n"
            "## Before the label is decided\n\nThe same sweep at the end of the neutral opening sentence: nothing "
            "about the label has been said yet, so every layer should be at chance."
        ),
        new_code_cell(
            "openings = LabelledTexts.from_sentiment(N, seed=1234, position='decision', max_chars=block)\n"
            "df_open = probe_layers(model, openings, 'resid_post', progress=False)\n"
            "print(probe_table(df_open))"
        ),
        new_markdown_cell(
            "## An untrained baseline\n\nA probe can also read what a *random* network computes: attention with "
            "random weights still mixes the characters before a position into it, so a bag of characters "
            "(including *sad* or *glad*) reaches the full stop. What the trained model adds over this baseline "
            "is what training built."
        ),
        new_code_cell(
            "torch.manual_seed(1)\n"
            "untrained = GPT(model.config, model.tokenizer).eval()\n"
            "df_untrained = probe_layers(untrained, stories, 'resid_post', progress=False)\n"
            "print(probe_table(df_untrained))"
        ),
        new_markdown_cell(
            "## The probe's direction\n\nAt the best layer, a cross-validated probe (`cv=5` picks the regularisation C). "
            "`direction()` maps its weights back through the standardisation into the residual stream and "
            "normalises them: a unit vector pointing toward *positive*. Compare it with the simplest direction "
            "of all, the difference of the class means."
        ),
        new_code_cell(
            "best = df[df.layer != 'embed'].sort_values('accuracy').iloc[-1]\n"
            "hook = best['hook']\n"
            "print('best layer:', best['layer'], hook, f\"accuracy {best['accuracy']:.3f}\")\n"
            "train, test = stories.split(0.25, seed=0)\n"
            "X_train = extract_activations(model, train, hooks=[hook], progress=False)[hook]\n"
            "X_test = extract_activations(model, test, hooks=[hook], progress=False)[hook]\n"
            "probe = LinearProbe(cv=3 if QUICK else 5, Cs=5 if QUICK else 10).fit(X_train, train.labels)\n"
            "print(f'held-out accuracy {probe.score(X_test, test.labels):.3f}, C chosen by cross-validation: {probe.C_:.3g}')\n"
            "direction = probe.direction()          # torch tensor [d_model], unit norm, toward 'positive'\n"
            "mean_diff = torch.tensor(X_train[train.labels == 'positive'].mean(0) - X_train[train.labels == 'negative'].mean(0))\n"
            "print(f'cosine(probe direction, mean difference) = {cosine(direction, mean_diff):.3f}')\n"
            "\n"
            "projection = X_test @ direction.numpy()\n"
            "plt.figure(figsize=(5, 3))\n"
            "for label, colour in (('negative', 'tab:red'), ('positive', 'tab:green')):\n"
            "    plt.hist(projection[test.labels == label], bins=20, alpha=0.6, color=colour, label=label)\n"
            "plt.xlabel('projection on the probe direction'); plt.legend(); plt.title(f'held-out stories at {hook}')\n"
            "plt.show()"
        ),
        new_markdown_cell(
            "## Watching the model make up its mind\n\n`probe_readout` applies the probe at every position of a "
            "story. Before the second sentence it has nothing to go on; after the first sentiment word it should "
            "swing to one side and stay there."
        ),
        new_code_cell(
            "from IPython.display import HTML\n"
            "\n"
            "fresh = LabelledTexts.from_sentiment(2, seed=777, position='end')\n"
            "for text, label in zip(fresh.texts, fresh.labels):\n"
            "    text = text[:block]\n"
            "    readout = probe_readout(model, probe, text, hook)\n"
            "    spans = ''.join(\n"
            "        f'<span style=\"background: rgba({int(255 * (1 - p))}, {int(200 * p)}, 80, 0.45)\">{tok}</span>'\n"
            "        for tok, p in zip(readout['token'], readout['score']))\n"
            "    display(HTML(f'<p><b>{label}</b> (green = probe says positive)</p><pre style=\"white-space: pre-wrap\">{spans}</pre>'))\n"
            "    plt.figure(figsize=(8, 2))\n"
            "    plt.plot(readout['position'], readout['score'])\n"
            "    plt.axhline(0.5, color='grey', linestyle=':')\n"
            "    plt.ylim(0, 1); plt.ylabel('P(positive)'); plt.xlabel('character'); plt.title(f'a {label} story')\n"
            "    plt.show()"
        ),
        new_markdown_cell(
            "## Does the probe generalise along the story?\n\nTrained at the reveal, tested at random positions "
            "later in held-out stories (`position='random'`)."
        ),
        new_code_cell(
            "later = LabelledTexts.from_sentiment(200 if QUICK else 1000, seed=4321, position='random', max_chars=block)\n"
            "X_later = extract_activations(model, later, hooks=[hook], progress=False)[hook]\n"
            "print(f'accuracy at random later positions: {probe.score(X_later, later.labels):.3f}')"
        ),
        new_markdown_cell(
            "## Tiny Shakespeare, labelled by VADER\n\nReal text has no ground truth, so lines are labelled by the "
            "VADER sentiment lexicon (compound score ≥ 0.5 positive, ≤ −0.5 negative, the rest dropped). Lines with "
            "characters outside this model's vocabulary are skipped. A model trained on the sentiment corpus has "
            "never seen Shakespeare, so whatever this shows, it is reported as it is."
        ),
        new_code_cell(
            "from nanolens.corpora import CorpusError\n"
            "\n"
            "try:\n"
            "    lines = LabelledTexts.from_shakespeare(n=200 if QUICK else 2000, max_chars=block, alphabet=model.tokenizer.chars)\n"
            "except CorpusError as err:\n"
            "    print('tiny Shakespeare is not available here:', str(err)[:200])\n"
            "else:\n"
            "    print(lines)\n"
            "    df_vader = probe_layers(model, lines, 'resid_post', progress=False)\n"
            "    print(probe_table(df_vader))"
        ),
        new_markdown_cell(
            "## From here\n\n* `nanolens probe --ckpt runs/NAME/best --dataset sentiment` prints the same table and "
            "writes the plot.\n* `probe.direction()` is a steering direction: add it to `" + "blocks.{L}.hook_resid_pre`"
            " during generation (the steering notebook) to make stories happier or sadder."
        ),
    ]
    return cells


def write(name, cells):
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    path = ROOT / "notebooks" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.validate(nb)
    nbformat.write(nb, str(path))
    print("wrote", path)


write("01_hooks_and_cache.ipynb", notebook_01())
write("02_probing_sentiment.ipynb", notebook_02())
