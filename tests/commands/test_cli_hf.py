"""The command line on a model trained elsewhere: `nanolens import` / `export`, and `hf:DIR`
wherever a checkpoint is taken (`sample`, `steer`, `probe`, `train --init-from`, `finetune`)."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from nanolens.cli import main
from nanolens.models import GPT
from nanolens.training import open_model
from nanolens.training.runs import output_dir

transformers.logging.set_verbosity_error()

CORPUS = "I love the sun. I hate the rain. The cat sat on the mat and was happy.\n" * 40


def test_import_writes_a_nanolens_checkpoint_with_the_same_logits(hf_gpt2_dir, tmp_path, capsys):
    out = tmp_path / "runs" / "gpt2"
    assert main(["import", "--hf", str(hf_gpt2_dir), "--out", str(out)]) == 0
    assert "GPT2LMHeadModel" in capsys.readouterr().err
    ours = GPT.load(out)
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_gpt2_dir).eval()
    tokens = ours.to_tokens("I love the cat")
    assert tokens[0, 0].item() == ours.tokenizer.bos_token_id  # GPT-2's BOS, as TransformerLens prepends it
    with torch.no_grad():
        assert torch.allclose(ours(tokens), hf(tokens).logits, atol=1e-4)
    assert main(["import", "--hf", str(hf_gpt2_dir), "--out", str(out)]) == 2  # never over a model already there
    assert "already exists" in capsys.readouterr().err


def test_sample_and_probe_take_hf_dir(hf_gpt2_dir, tmp_path, capsys):
    assert main(["sample", "--ckpt", f"hf:{hf_gpt2_dir}", "--prompt", "I love", "--max-new-tokens", "5",
                 "--temperature", "0", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.startswith("I love")
    assert main(["probe", "--ckpt", f"hf:{hf_gpt2_dir}", "--n", "40", "--out", str(tmp_path / "p"), "--quiet",
                 "--device", "cpu"]) == 0
    assert "blocks.1.hook_resid_post" in capsys.readouterr().out


def test_results_of_an_hf_model_go_beside_it_not_into_a_hub_cache(hf_gpt2_dir):
    assert output_dir(f"hf:{hf_gpt2_dir}", "steering") == hf_gpt2_dir / "steering"
    assert str(output_dir("hf:openai-community/gpt2", "steering")) == "runs/openai-community_gpt2/steering"


def test_train_init_from_hf_continues_pretraining_in_the_models_tokenizer(hf_gpt2_dir, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    out = tmp_path / "runs" / "ft"
    start = GPT.from_hf(hf_gpt2_dir)
    assert main(["train", "--init-from", f"hf:{hf_gpt2_dir}", "--data", str(corpus), "--out", str(out),
                 "--max-iters", "6", "--batch-size", "2", "--eval-interval", "3", "--eval-iters", "1",
                 "--sample-interval", "0", "--device", "cpu", "--set", "dropout=0.1", "--set", "block_size=32"]) == 0
    tuned = GPT.load(out / "last")
    assert tuned.config.dropout == 0.1 and tuned.config.n_layer == start.config.n_layer and tuned.config.block_size == 32
    assert tuned.pos_embed.W_pos.shape[0] == 32  # the position table cropped, as nanoGPT's crop_block_size
    assert tuned.config.extra["init_from"] == f"hf:{hf_gpt2_dir}"
    assert tuned.tokenizer.encode(CORPUS[:40]) == start.tokenizer.encode(CORPUS[:40])
    moved = [n for n, p in tuned.state_dict().items() if not torch.equal(p, start.state_dict()[n])]
    assert moved, "training from the imported weights changed none of them"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in rows if r.get("val_loss") is not None)
    assert first["iter"] == 0 and abs(first["val_loss"] - (torch.log(torch.tensor(512.0)).item())) < 1.0


def test_train_init_from_refuses_what_would_change_the_architecture(hf_gpt2_dir, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    base = ["train", "--init-from", f"hf:{hf_gpt2_dir}", "--data", str(corpus), "--max-iters", "1", "--device", "cpu"]
    assert main([*base, "--out", str(tmp_path / "a"), "--preset", "modern"]) == 2
    assert "keeps that model's architecture and tokenizer; drop --preset" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "b"), "--set", "n_layer=2"]) == 2
    assert "changes the shapes" in capsys.readouterr().err


def test_finetune_sft_starts_from_hf_dir(hf_gpt2_dir, tmp_path):
    out = tmp_path / "runs" / "sft"
    assert main(["finetune", "sft", "--ckpt", f"hf:{hf_gpt2_dir}", "--out", str(out), "--max-iters", "2",
                 "--batch-size", "2", "--n-pairs", "16", "--eval-iters", "1", "--device", "cpu", "--quiet"]) == 0
    assert (out / "last" / "model.safetensors").is_file()


def test_export_of_a_model_trained_here_loads_in_transformers(tmp_path, capsys):
    run = tmp_path / "runs" / "tiny"
    assert main(["train", "--preset", "gpt2", "--data", "sentiment", "--out", str(run), "--max-iters", "3",
                 "--batch-size", "2", "--set", "n_layer=2", "--set", "n_embd=32", "--set", "n_head=2",
                 "--set", "block_size=32", "--sample-interval", "0", "--eval-interval", "3", "--eval-iters", "1",
                 "--device", "cpu"]) == 0
    hf_dir = tmp_path / "hf"
    assert main(["export", "--ckpt", str(run), "--hf", str(hf_dir)]) == 0
    assert "from_pretrained" in capsys.readouterr().err
    ours = GPT.load(run / "best")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    tokens = ours.to_tokens("the sky was")
    with torch.no_grad():
        assert torch.allclose(ours(tokens), theirs(tokens).logits, atol=1e-5)
    assert main(["export", "--ckpt", f"hf:{hf_dir}", "--hf", str(tmp_path / "again")]) == 2
    assert "already a Hugging Face checkpoint" in capsys.readouterr().err


def test_an_empty_hf_source_and_model_dir_of_hf_name_the_fix():
    with pytest.raises(ValueError, match="give the checkpoint after hf:"):
        open_model("hf:")
    from nanolens.training import model_dir
    with pytest.raises(ValueError, match="nanolens import --hf"):
        model_dir("hf:somewhere")
