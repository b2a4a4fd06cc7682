"""The `nanolens` command line: the parser, and dispatch to `nanolens.commands.<name>.run`.

The one lazy import of the package is here: a command's module (and with it torch and
transformer-lens) is imported only when that command runs, so `nanolens --help` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Sequence

# Library errors name parameters; on the command line the same advice names the flags. (A name
# followed by a colon is a file's field, `train.toml: learning_rate: expected ...`: kept.)
FLAG_WORDS = (
    (r"\bpass check_model=False\b", "pass --any-model"),
    (r"\bon_nan='skip'", "--on-nan skip"),
    (r"\(or None for no limit\)", "(or leave the flag out for no limit)"),
    (r"\blearning_rate\b(?!:)", "--lr"),
    (r"\bgrad_clip\b(?!:)", "--grad-clip"),
    (r"\btop_k\b(?!:)", "--top-k"),
    (r"\btop_p\b(?!:)", "--top-p"),
    (r"\bmax_new_tokens\b(?!:)", "--max-new-tokens"),
)


def in_flags(message: str) -> str:
    """A library error message as the command line should say it (parameters -> flags)."""
    for pattern, flag in FLAG_WORDS:
        message = re.sub(pattern, flag, message)
    return message


def _add_sampling_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--stop", default=None, help="end a sample when this string appears")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None,
                   help="shakespeare, sentiment (the embedded default), or a UTF-8 text file / folder of .txt files")
    p.add_argument("--preset", default=None, help="model preset (default gpt2; `nanolens presets` lists them)")
    p.add_argument("--out", required=True, help="run directory: checkpoints last/ and best/, metrics.jsonl, loss_curve.png")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a model config field, e.g. --set n_layer=4 --set block_size=64")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="a .toml or .json file of TrainConfig fields (plus optional data, preset, tokenizer, "
                        "vocab_size and a [model] table); flags override it")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--init-from", default=None, metavar="CKPT",
                   help="start from a trained model instead of a fresh preset (nanoGPT's init_from): a run or checkpoint "
                        "folder, or hf:DIR for a Hugging Face checkpoint; the corpus is read with its tokenizer")
    p.add_argument("--tokenizer", choices=("char", "bpe"), default=None, help="char (default) or bpe")
    p.add_argument("--vocab-size", type=int, default=None, help="BPE vocabulary size (default 1024)")
    g = p.add_argument_group("training (TrainConfig fields)")
    g.add_argument("--max-iters", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float, help="peak learning rate")
    g.add_argument("--min-lr", type=float, help="learning rate at the end of the cosine decay")
    g.add_argument("--warmup-iters", type=int)
    g.add_argument("--lr-decay-iters", type=int, help="iterations of cosine decay (default max-iters)")
    g.add_argument("--grad-accum-steps", type=int)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--grad-clip", type=float)
    g.add_argument("--beta1", type=float, help="AdamW beta1 (default 0.9)")
    g.add_argument("--beta2", type=float, help="AdamW beta2 (default 0.99)")
    g.add_argument("--val-fraction", type=float)
    g.add_argument("--eval-interval", type=int)
    g.add_argument("--eval-iters", type=int)
    g.add_argument("--log-interval", type=int)
    g.add_argument("--sample-interval", type=int, help="iterations between printed samples (0: none)")
    g.add_argument("--sample-tokens", type=int)
    g.add_argument("--device", default=None, help="auto (default), cpu, cuda, mps")
    g.add_argument("--seed", type=int)
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    g.add_argument("--dtype", default=None, help="auto (default: bf16/fp16 autocast on CUDA), float32, bfloat16, float16")
    g.add_argument("--on-nan", default=None, choices=("stop", "skip"),
                   help="a non-finite loss or gradient: stop the run (default) or skip that step")


def _add_steer_parsers(sub) -> None:
    p = sub.add_parser("steer", help="add a steering vector while generating: unsteered and steered side by side, or a sweep")
    p.add_argument("--ckpt", required=True, help="checkpoint directory (runs/NAME/best) or run directory (runs/NAME), or hf:DIR (a Hugging Face checkpoint)")
    p.add_argument("--method", default="contrast", help="contrast (ActAdd, needs --positive/--negative), mean-diff, pca, probe, random")
    p.add_argument("--positive", default=None, help="contrast: the positive prompt, e.g. 'I love'")
    p.add_argument("--negative", default=None, help="contrast: the negative prompt, e.g. 'I hate'")
    p.add_argument("--read", default="aligned", help="contrast: aligned (ActAdd: row i at position i), mean, last, or an index")
    p.add_argument("--dataset", default="sentiment",
                   help="mean-diff/pca/probe/random: sentiment (matched story pairs), shakespeare (VADER lines), or a .csv/.jsonl with positive/negative labels")
    p.add_argument("--n", type=int, default=128, help="examples per class for mean-diff/pca/probe")
    p.add_argument("--data-seed", type=int, default=4321, help="seed of the dataset's examples")
    p.add_argument("--layer", type=int, default=None, help="block whose resid_pre is steered (default: the middle one)")
    p.add_argument("--coeff", type=float, default=4.0, help="coefficient (absolute, or x the layer's typical norm with --relative)")
    p.add_argument("--relative", action="store_true", help="coefficients in units of the layer's typical residual norm")
    p.add_argument("--positions", default="all", help="all, prompt, generated, or k (the first k positions)")
    p.add_argument("--vector", default=None, help="load a saved vector (PATH.safetensors + PATH.json) instead of computing one")
    p.add_argument("--save", default=None, metavar="PATH", help="save the vector as PATH.safetensors + PATH.json")
    p.add_argument("--any-model", action="store_true", help="allow a vector computed on other weights (same width)")
    p.add_argument("--sweep", action="store_true", help="generate at several --coeffs (and --layers), write a table and plots")
    p.add_argument("--coeffs", default="-8,-4,0,4,8",
                   help="sweep: comma-separated coefficients (with a leading minus write --coeffs=-8,-4,0,4,8)")
    p.add_argument("--layers", default=None, help="sweep: comma-separated layers (default --layer)")
    p.add_argument("--scorer", default=None, choices=("words", "vader"), help="sweep: sentiment scorer (default words for sentiment models, else vader)")
    p.add_argument("--out", default=None, help="sweep: output folder (default RUN/steering)")
    p.add_argument("--width", type=int, default=110, help="terminal width for the side-by-side columns")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--prompt", action="append", default=None, help="prompt to continue (repeat for several; default held-out story openings)")
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=120)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--stop", default="\n", help="end a continuation at this string (default a newline)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    p.set_defaults(command_module="steer")

    p = sub.add_parser("demo", help="the whole story offline: train, probe, find the sentiment direction, steer, report")
    p.add_argument("--out", default="runs/demo", help="output folder: report.md, plots, vectors, the run's checkpoints")
    p.add_argument("--data", default="sentiment", choices=("sentiment", "shakespeare"),
                   help="sentiment (the embedded corpus, default) or shakespeare (VADER labels)")
    p.add_argument("--quick", action="store_true", help="a tiny model and few samples (seconds; what the tests run)")
    p.add_argument("--train-seconds", type=float, default=None, help="training budget in seconds (default 150; iterations are calibrated)")
    p.add_argument("--iters", type=int, default=None, help="train exactly this many iterations instead of a time budget")
    p.add_argument("--preset", default=None, help="model preset (default modern: it learns the corpus fastest on a CPU)")
    p.add_argument("--ckpt", default=None, help="skip training: analyse and steer this trained checkpoint (or run directory)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(command_module="demo")


def _add_finetune_parsers(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune a trained model: sft, reward model, ppo, dpo, and compare them with steering")
    stages = p.add_subparsers(dest="stage", metavar="STAGE", required=True)

    def stage(name: str, help: str, data: str | None = None) -> argparse.ArgumentParser:
        s = stages.add_parser(name, help=help)
        s.add_argument("--ckpt", required=name not in ("sft",), help="the model to start from: checkpoint or run directory, or hf:DIR")
        s.add_argument("--out", required=True, help="run directory to write")
        if data:
            s.add_argument("--data", default=None, help=f"{data} (default: the embedded sentiment task)")
            s.add_argument("--n-pairs", type=int, default=2000, help="pairs of the embedded task")
        if name != "compare":
            s.add_argument("--template", default=None,
                           help="chat ('{prompt}\\n{response}\\n\\n'), raw ('{prompt}{response}\\n\\n'), or your own with "
                                "{prompt} and {response} (default: sft chat, others the starting model's own)")
        s.add_argument("--seed", type=int, default=None)
        s.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
        s.add_argument("--quiet", action="store_true", help="no progress bars or samples")
        s.set_defaults(command_module="finetune")
        return s

    def train_flags(s: argparse.ArgumentParser) -> None:
        g = s.add_argument_group("training (TrainConfig fields)")
        for flag, kind in (("--max-iters", int), ("--batch-size", int), ("--lr", float), ("--min-lr", float),
                           ("--warmup-iters", int), ("--eval-interval", int), ("--eval-iters", int), ("--log-interval", int),
                           ("--sample-interval", int), ("--val-fraction", float)):
            g.add_argument(flag, type=kind, default=None)

    s = stage("sft", "supervised fine-tuning on prompt/response pairs, loss on the responses", "JSONL of {prompt, response}")
    s.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train_flags(s)
    s = stage("reward", "train a reward model on preference pairs (Bradley-Terry)", "JSONL of {prompt, chosen, rejected}")
    train_flags(s)
    s = stage("dpo", "direct preference optimisation on preference pairs", "JSONL of {prompt, chosen, rejected}")
    s.add_argument("--beta", type=float, default=0.1, help="DPO's beta (larger: stay closer to the reference)")
    train_flags(s)
    s = stage("ppo", "PPO against a reward model (or the word-count sentiment scorer) with a KL penalty")
    s.add_argument("--reward", default="words", help="a reward model directory (nanolens finetune reward), or words")
    s.add_argument("--prompts", default=None, help="JSONL of {prompt} (default: the embedded story openings)")
    s.add_argument("--n-prompts", type=int, default=512, help="embedded prompts to draw rollouts from")
    g = s.add_argument_group("PPO (PPOConfig fields)")
    for flag, kind in (("--steps", int), ("--prompts-per-step", int), ("--samples-per-prompt", int), ("--max-new-tokens", int),
                       ("--kl-coef", float), ("--lr", float), ("--ppo-epochs", int), ("--minibatch-size", int),
                       ("--temperature", float), ("--lam", float)):
        g.add_argument(flag, type=kind, default=None)
    s = stage("compare", "one table on held-out prompts: base, steered, SFT, PPO, DPO (trains the stages not given)")
    for name in ("sft", "reward", "ppo", "dpo"):
        s.add_argument(f"--{name}", default=None, metavar="DIR", help=f"a finished {name} run (default: train one into OUT/{name})")
    s.add_argument("--steering", default="auto", help="auto (mean difference, chosen on other openings), a `nanolens demo` "
                                                       "output directory (its best method), or none")
    s.add_argument("--prompts", type=int, default=None, help="held-out openings in the table (default 24)")
    s.add_argument("--samples", type=int, default=None, help="samples per opening (default 4)")
    s.add_argument("--max-new-tokens", type=int, default=None)
    s.add_argument("--quick", action="store_true", help="tiny budgets (seconds; what the tests run)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nanolens",
        description="Train a GPT yourself, then open it up: hooks, probes and steering vectors.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("sample", help="generate text from a checkpoint (or a fresh model)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--ckpt", help="checkpoint directory (e.g. runs/NAME/best), run directory, or hf:DIR")
    src.add_argument("--preset", default="gpt2", help="fresh untrained model of this preset (default gpt2)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field of a fresh model")
    _add_sampling_flags(p)
    p.set_defaults(command_module="sample")

    p = sub.add_parser("train", help="train a model on a corpus and watch it learn")
    _add_train_flags(p)
    p.set_defaults(command_module="train")

    p = sub.add_parser("probe", help="fit a linear probe at every layer: where does the model know the label?")
    p.add_argument("--ckpt", required=True, help="checkpoint directory (runs/NAME/best) or run directory (runs/NAME), or hf:DIR (a Hugging Face checkpoint)")
    p.add_argument("--dataset", default="sentiment",
                   help="sentiment (the embedded corpus' story labels), shakespeare (VADER-labelled lines), "
                        "or a .csv/.jsonl file with text and label columns")
    p.add_argument("--hook", default="resid_post",
                   help="hook kind(s) per block (resid_post, resid_mid, attn_out, mlp_out; comma-separated) or full hook names")
    p.add_argument("--out", default=None, help="folder for the table (CSV) and plot (PNG); default RUN/probes")
    p.add_argument("--n", type=int, default=None, help="number of texts (default: 1000 stories; all VADER lines; the whole file)")
    p.add_argument("--position", default="reveal", choices=("reveal", "decision", "end", "random"),
                   help="sentiment: where each story is read (default reveal: the end of the first sentence that shows the label)")
    p.add_argument("--pos-threshold", type=float, default=0.5, help="shakespeare: VADER compound score at or above which a line is positive")
    p.add_argument("--neg-threshold", type=float, default=-0.5, help="shakespeare: VADER compound score at or below which a line is negative")
    p.add_argument("--data-path", default=None, help="shakespeare: path of tinyshakespeare.txt (default: found as `train --data shakespeare` finds it)")
    p.add_argument("--text-column", default="text", help="file datasets: the text column / key")
    p.add_argument("--label-column", default="label", help="file datasets: the label column / key")
    p.add_argument("--read", default=None, choices=("last", "mean"),
                   help="where each text is read: its last token (default; a file's position column if it has one) or the mean over all its tokens")
    p.add_argument("--control", default="shuffle", choices=("shuffle", "token"), help="control task (Hewitt & Liang): shuffled labels or random labels per token type")
    p.add_argument("--cv", action="store_true", help="choose the regularisation C by 5-fold cross-validation")
    p.add_argument("--test-size", type=float, default=0.25, help="held-out fraction of the texts")
    p.add_argument("--truncate", action="store_true", help="crop texts longer than the context to their last block_size tokens")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="seed of the train/test split and the control labels")
    p.add_argument("--data-seed", type=int, default=1234, help="seed of the stories (sentiment) or of the line sample (shakespeare)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(command_module="probe")

    p = sub.add_parser("explore", help="start the Streamlit explorer (attention, logit lens, steering, probes, training)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--ckpt", help="a checkpoint folder (runs/NAME/best) or one run (runs/NAME)")
    src.add_argument("--runs", help="a folder of runs (default: runs/, or choose in the app's sidebar)")
    p.add_argument("--port", type=int, default=None, help="port to serve on (default: the first free one from 8501)")
    p.add_argument("--address", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--dry-run", action="store_true", help="print the streamlit command and the address, start nothing")
    p.set_defaults(command_module="explore")

    _add_steer_parsers(sub)
    _add_finetune_parsers(sub)

    p = sub.add_parser("import", help="open a Hugging Face checkpoint (GPT-2, Pythia, Llama family) and save it as a nanolens model")
    p.add_argument("--hf", required=True, metavar="SOURCE", help="a Hugging Face checkpoint directory, or a hub name (e.g. openai-community/gpt2)")
    p.add_argument("--out", required=True, help="the nanolens checkpoint folder to write (e.g. runs/gpt2)")
    p.add_argument("--dtype", default=None, help="float32 (default), bfloat16, float16, or auto (the checkpoint's own)")
    p.set_defaults(command_module="hf")

    p = sub.add_parser("export", help="write a model trained here as a Hugging Face checkpoint (GPT-2, Llama or GPT-NeoX format)")
    p.add_argument("--ckpt", required=True, help="checkpoint directory (runs/NAME/best) or run directory (runs/NAME)")
    p.add_argument("--hf", required=True, metavar="OUT", help="the folder to write (config.json, model.safetensors, tokenizer)")
    p.set_defaults(command_module="hf")

    p = sub.add_parser("bench", help="measure this machine's matmul peak (fp32, bf16): what MFU figures divide by")
    p.add_argument("--threads", default=None, help="comma-separated thread counts (default: 1, the current count, all cores)")
    p.add_argument("--refresh", action="store_true", help="measure again instead of reading the cache")
    p.set_defaults(command_module="bench")

    p = sub.add_parser("presets", help="list the simple-to-complex ladder of model presets")
    p.set_defaults(command_module="presets")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    name = getattr(args, "command_module", None)
    if name is None:
        parser.print_help()
        return 0
    try:
        command = importlib.import_module(f"nanolens.commands.{name}")  # lazy: see the module docstring
        return command.run(args)
    except (ValueError, OSError, KeyError) as err:  # errors that name their fix; anything else is a bug: traceback
        print(f"nanolens {args.command}: error: {in_flags(str(err))}", file=sys.stderr)
        return 2
