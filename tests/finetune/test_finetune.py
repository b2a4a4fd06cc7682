"""Fine-tuning: data and templates, SFT's response-only loss, the reward model, PPO, DPO, the
comparison with steering, and the `nanolens finetune` commands, on tiny models and budgets."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from nanolens.commands.sample import DEFAULT_CHARS
from nanolens.cli import main
from nanolens.models import GPT, CharTokenizer, GPTConfig
from nanolens.finetune.dpo import dpo_loss, pair_logprobs, train_dpo
from nanolens.finetune.policy import response_logprobs
from nanolens.finetune.sft import sft
from nanolens.finetune.data import FinetuneDataError, FinetuneDataWarning, Preference, PromptResponse, SFTData, Template, encode_pairs, encode_preferences, fits_context, heldout_prompts, load_preferences, load_sft_pairs, sentiment_preferences, sentiment_prompts, sentiment_sft_pairs
from nanolens.finetune.evaluate import evaluate_policy
from nanolens.finetune.ppo import PPOConfig, PPOTrainer, RewardError, check_rewards, gae, ppo
from nanolens.finetune.reward import RewardModel, bradley_terry_loss, train_reward_model
from nanolens.corpora.sentiment import score_sentiment
from nanolens.training import TrainConfig

TOY = "abcdefgh\n"




def tiny(chars: str = TOY, block_size: int = 32, seed: int = 0) -> GPT:
    tok = CharTokenizer(chars)
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=32, block_size=block_size), tok).eval()


def fast(**kw) -> TrainConfig:
    base = dict(batch_size=8, learning_rate=3e-3, min_lr=3e-4, warmup_iters=2, eval_iters=2, log_interval=5,
                sample_interval=0, device="cpu", progress=False, verbose=False)
    return TrainConfig(**{**base, **kw})


def toy_preferences(n: int, seed: int = 0) -> list[Preference]:
    """Chosen responses are mostly 'a', rejected mostly 'b': trivially separable."""
    rng = random.Random(seed)

    def text(major: str) -> str:
        return "".join(major if rng.random() < 0.8 else rng.choice("cdefgh") for _ in range(rng.randint(3, 8)))

    return [Preference(rng.choice("cdefgh"), text("a"), text("b")) for _ in range(n)]


# ---------------------------------------------------------------------------------------------
# templates and data
# ---------------------------------------------------------------------------------------------
def test_template_parts_and_round_trip():
    t = Template("Q. {prompt}\nA. {response}\n\n")
    assert (t.prefix, t.separator, t.end) == ("Q. ", "\nA. ", "\n\n")
    assert t.format("hi", "yo") == "Q. hi\nA. yo\n\n"
    assert t.cut("yo\n\nQ. more") == ("yo", True) and t.cut("unfinished") == ("unfinished", False)
    chat, raw = Template.named("chat"), Template.named("raw")
    assert chat.attach(" The sky.") == "The sky." and raw.attach(" The sky.") == " The sky."
    assert chat.as_continuation("The sky.") == " The sky." and raw.as_continuation(" The sky.") == " The sky."
    with pytest.raises(FinetuneDataError, match="must hold"):
        Template("{response} then {prompt}")
    with pytest.raises(FinetuneDataError, match="Q"):
        Template("Q. {prompt}\n{response}").check(CharTokenizer(TOY))


def test_malformed_jsonl_lines_are_skipped_with_their_line_numbers(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join([
        json.dumps({"prompt": "a", "response": "b"}),
        "{not json",
        "",
        json.dumps({"prompt": "c"}),
        json.dumps(["a", "b"]),
        json.dumps({"prompt": "d", "response": "e", "extra": 1}),
        json.dumps({"prompt": "f", "response": 3}),
    ]) + "\n")
    with pytest.warns(FinetuneDataWarning) as caught:
        pairs = load_sft_pairs(path)
    message = str(caught[0].message)
    assert "skipped 4 malformed" in message
    for line in ("line 2", "line 4", "line 5", "line 7"):
        assert line in message
    assert "line 3" not in message  # a blank line is not an error
    assert [(p.prompt, p.response, p.line) for p in pairs] == [("a", "b", 1), ("d", "e", 6)]

    bad = tmp_path / "bad.jsonl"
    bad.write_text("{}\n[1]\n" + json.dumps({"prompt": "p", "chosen": "same", "rejected": "same"}) + "\n")
    with pytest.raises(FinetuneDataError, match="no usable line.*line 1.*line 2.*line 3.*same text"):
        load_preferences(bad)


def test_over_long_pairs_are_reported_and_all_too_long_is_an_error():
    tok = CharTokenizer(TOY)
    pairs = [PromptResponse("a", "b", 1), PromptResponse("a" * 30, "b", 2), PromptResponse("c", "d" * 30, 3)]
    with pytest.warns(FinetuneDataWarning, match=r"skipped 2 of 3 pairs.*block_size=16.*line 2, line 3"):
        examples = encode_pairs(pairs, tok, Template(), block_size=16)
    assert len(examples) == 1 and examples[0].prompt_len == 2  # "a\n"
    with pytest.raises(FinetuneDataError, match="all 2 preference pairs are longer.*larger block_size"):
        encode_preferences([Preference("a" * 20, "b", "c", 1), Preference("a", "b" * 20, "c", 2)], tok, Template(), 16)


def test_unknown_character_in_user_data_names_it_and_the_line():
    tok = CharTokenizer(TOY)
    with pytest.raises(FinetuneDataError, match=r"line 7: the response cannot be encoded.*'é'"):
        encode_pairs([PromptResponse("abc", "café", 7)], tok, Template(), 32)


def test_embedded_tasks_fit_the_context_and_hold_out_their_prompts():
    tok = CharTokenizer(DEFAULT_CHARS + '"0123456789')
    chat, raw = Template("{prompt}\n{response}\n\n"), Template.named("raw")
    pairs = sentiment_sft_pairs(20, template=chat, fits=fits_context(tok, chat, 128))
    assert len(pairs) >= 10 and all(score_sentiment(p.response) > 0 for p in pairs)
    assert all(not p.response.startswith(" ") for p in pairs)
    assert len(encode_pairs(pairs, tok, chat, 128)) == len(pairs)  # nothing skipped: they were cut to fit
    prefs = sentiment_preferences(20, template=raw, fits=fits_context(tok, raw, 128))
    assert all(p.chosen.startswith(" ") and score_sentiment(p.chosen) > 0 > score_sentiment(p.rejected) for p in prefs)
    cut = [p for p in prefs if not p.chosen.endswith(".")]
    assert 0 < len(cut) < 20  # some pairs are cut off mid-sentence, as PPO's samples are
    held_out = set(heldout_prompts(50))
    assert not held_out & {p.prompt for p in pairs} and not held_out & set(sentiment_prompts(200))


# ---------------------------------------------------------------------------------------------
# SFT
# ---------------------------------------------------------------------------------------------
def test_response_only_loss_has_no_gradient_on_prompt_positions():
    model = tiny()
    tok = model.tokenizer
    examples = encode_pairs([PromptResponse("abcd", "efg")], tok, Template(), 32)
    data = SFTData(examples, examples, tok.vocab_size)
    x, y = data.get_batch("train", 1, 32)
    prompt_len = 5  # "abcd\n"; then "efg\n\n"
    assert x.shape == (1, 9)
    assert (y[0, : prompt_len - 1] == -1).all() and (y[0, prompt_len - 1 :] != -1).all()
    logits = model(x).detach().requires_grad_(True)
    GPT.loss(logits, x, y).backward()
    assert logits.grad[0, : prompt_len - 1].abs().sum() == 0
    assert (logits.grad[0, prompt_len - 1 :].abs().sum(-1) > 0).all()
    # the loss ignores what the prompt positions "should" predict
    y2 = y.clone()
    y2[0, : prompt_len - 1] = -1
    assert GPT.loss(model(x), x, y2) == GPT.loss(model(x), x, y)


def test_sft_lowers_the_response_loss_saves_its_template_and_resumes(tmp_path):
    model = tiny()
    rng = random.Random(0)
    pairs = [PromptResponse(p, p[::-1] * 2) for p in ("".join(rng.choice("abcdefgh") for _ in range(3)) for _ in range(40))]
    data = SFTData.from_pairs(pairs, model.tokenizer, Template(), 32, val_fraction=0.2)
    x, y = data.get_batch("val", 16, 32, torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(x, targets=y, return_type="loss").item()
    summary = sft(model, pairs, fast(max_iters=30, eval_interval=15), tmp_path / "sft")
    with torch.no_grad():
        after = model.eval()(x, targets=y, return_type="loss").item()
    assert after < before - 0.3
    assert summary["tokens"] > 0 and summary["seconds"] > 0 and (tmp_path / "sft" / "pairs.jsonl").is_file()
    saved = GPT.load(tmp_path / "sft" / "best")
    assert Template.of(saved).text == Template().text
    again = sft(tiny(), pairs, fast(max_iters=40, eval_interval=15), tmp_path / "sft", resume=True)
    assert again["iter"] == 40 and again["tokens"] > summary["tokens"]


# ---------------------------------------------------------------------------------------------
# the reward model
# ---------------------------------------------------------------------------------------------
def test_bradley_terry_loss_matches_a_hand_computation():
    loss = bradley_terry_loss(torch.tensor([1.0, -0.5]), torch.tensor([0.0, 0.5]))
    expected = (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(1.0))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_reward_model_learns_a_separable_preference_and_round_trips(tmp_path):
    model = tiny(block_size=16)
    rm, summary = train_reward_model(model, toy_preferences(160), fast(max_iters=40, eval_interval=20, val_fraction=0.25),
                                     tmp_path / "rm", template="raw")
    assert summary["val_accuracy"] >= 0.9 and summary["val_pairs"] == 40
    again = RewardModel.load(tmp_path / "rm")
    prompts, responses = ["c", "c"], ["aaaaa", "bbbbb"]
    assert again.score(prompts, responses) == pytest.approx(rm.score(prompts, responses), abs=1e-5)
    good, bad = again.score(prompts, responses)
    assert good > bad
    assert (tmp_path / "rm" / "reward_curves.png").is_file()


# ---------------------------------------------------------------------------------------------
# PPO
# ---------------------------------------------------------------------------------------------
def test_gae_matches_a_hand_computed_example():
    rewards = torch.tensor([[0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.2, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # a two-token response, padded to three
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    # t=1: delta = 1 + 0 (episode ends) - 0.2 = 0.8; t=0: delta = 0 + 0.2 - 0.5 = -0.3, A = -0.3 + 0.5 * 0.8
    assert adv.tolist()[0] == pytest.approx([0.1, 0.8, 0.0])
    assert ret.tolist()[0] == pytest.approx([0.6, 1.0, 0.0])
    adv, _ = gae(rewards, values, mask, gamma=0.9, lam=1.0)
    assert adv.tolist()[0] == pytest.approx([0.9 * 1.0 - 0.5, 0.8, 0.0])


def frac_a(text: str) -> float:
    return text.count("a") / max(len(text), 1)


def test_ppo_raises_a_toy_reward_and_logs_it(tmp_path):
    config = PPOConfig(steps=10, prompts_per_step=4, samples_per_prompt=4, max_new_tokens=8, learning_rate=3e-3,
                       kl_coef=0.01, device="cpu", progress=False, verbose=False)
    _, summary = ppo(tiny(), frac_a, list("bcde"), config, tmp_path / "ppo", template="raw")
    records = [json.loads(line) for line in (tmp_path / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 10 and {"reward", "kl", "frac_positive", "sample", "pg_loss", "vf_loss"} <= set(records[0])
    first, last = records[0]["reward"], sum(r["reward"] for r in records[-3:]) / 3
    assert last > first + 0.2, (first, last)
    assert (tmp_path / "ppo" / "ppo_curves.png").is_file() and GPT.load(tmp_path / "ppo" / "last")
    assert summary["tokens"] > 0 and summary["final"]["reward"] == records[-1]["reward"]


def test_kl_is_zero_while_the_policy_is_the_reference():
    trainer = PPOTrainer(tiny(), frac_a, list("bcde"), PPOConfig(prompts_per_step=2, samples_per_prompt=3, max_new_tokens=6,
                                                                  device="cpu", progress=False))
    exp = trainer.make_experience(1)
    assert torch.equal(exp["kl"], torch.zeros_like(exp["kl"]))
    assert exp["mask"].sum() > 0


def test_a_nan_reward_is_a_clear_error():
    with pytest.raises(RewardError, match=r"returned nan for the prompt 'b' and the sample 'xy'.*finite number"):
        check_rewards([0.5, float("nan")], ["a", "b"], ["ok", "xy"])
    trainer = PPOTrainer(tiny(), lambda text: float("nan"), ["b"], PPOConfig(prompts_per_step=1, samples_per_prompt=2,
                                                                             max_new_tokens=4, device="cpu", progress=False))
    with pytest.raises(RewardError, match="prompt 'b'"):
        trainer.make_experience(1)


# ---------------------------------------------------------------------------------------------
# DPO
# ---------------------------------------------------------------------------------------------
def test_dpo_loss_is_log_2_at_the_start_and_falls(tmp_path):
    model = tiny(block_size=16)
    examples = encode_preferences(toy_preferences(8), model.tokenizer, Template.named("raw"), 16)
    with torch.no_grad():
        c, r = pair_logprobs(model, examples)
    loss, chosen, rejected = dpo_loss(c, r, c.clone(), r.clone(), beta=0.1)
    assert loss.item() == pytest.approx(math.log(2)) and torch.equal(chosen, torch.zeros_like(chosen))
    # the summed response log-probs are those of a plain forward pass
    tokens = torch.tensor([examples[0].prompt + examples[0].chosen])
    lp, mask = response_logprobs(model, tokens, torch.tensor([len(examples[0].prompt)]), torch.tensor([tokens.shape[1]]))
    assert lp.sum().item() == pytest.approx(c[0].item(), abs=1e-5) and mask.sum() == len(examples[0].chosen)

    trained, summary = train_dpo(model, toy_preferences(120), fast(max_iters=30, eval_interval=15, val_fraction=0.25),
                                 tmp_path / "dpo", beta=0.5, template="raw")
    records = [json.loads(line) for line in (tmp_path / "dpo" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert summary["val_loss"] < math.log(2) - 0.1 and summary["val_accuracy"] >= 0.8
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    assert Template.of(GPT.load(tmp_path / "dpo" / "last")).text == Template.named("raw").text


# ---------------------------------------------------------------------------------------------
# evaluation and the command line
# ---------------------------------------------------------------------------------------------
def test_evaluate_policy_reports_follow_rate_sentiment_and_perplexity():
    model = tiny(chars=DEFAULT_CHARS + '"0123456789', block_size=128)
    stats, samples = evaluate_policy(model, heldout_prompts(2), template="chat", samples_per_prompt=2, max_new_tokens=6,
                                     progress=False)
    assert stats["n"] == 4 == len(samples) and 0 <= stats["follow_rate"] <= 1 and stats["perplexity"] > 1
    assert stats["template"] == Template().text
    assert all(s["n_tokens"] <= 6 + 1 for s in samples)  # + the space that joins a chat response to the bare prompt


@pytest.fixture(scope="module")
def base_ckpt(tmp_path_factory):
    """A tiny untrained model over the sentiment corpus' characters, saved as a checkpoint."""
    path = tmp_path_factory.mktemp("finetune") / "base"
    tiny(chars=DEFAULT_CHARS + '"0123456789', block_size=128).save(path)
    return path


def finetune(*args: str) -> int:
    return main(["finetune", *args, "--device", "cpu", "--quiet"])


FAST = ["--max-iters", "2", "--batch-size", "2", "--eval-iters", "1", "--n-pairs", "12"]


def test_cli_sft_reward_ppo_dpo(base_ckpt, tmp_path):
    assert finetune("sft", "--ckpt", str(base_ckpt), "--out", str(tmp_path / "sft"), *FAST) == 0
    assert finetune("sft", "--out", str(tmp_path / "sft"), "--resume", "--max-iters", "3") == 0
    assert json.loads((tmp_path / "sft" / "last" / "trainer_state.json").read_text())["iter"] == 3
    assert finetune("reward", "--ckpt", str(base_ckpt), "--out", str(tmp_path / "rm"), *FAST) == 0
    assert finetune("ppo", "--ckpt", str(tmp_path / "sft"), "--reward", str(tmp_path / "rm"), "--out", str(tmp_path / "ppo"),
                    "--steps", "1", "--prompts-per-step", "1", "--samples-per-prompt", "2", "--max-new-tokens", "4") == 0
    assert finetune("dpo", "--ckpt", str(base_ckpt), "--out", str(tmp_path / "dpo"), *FAST, "--beta", "0.2") == 0
    for run in ("sft", "rm", "ppo", "dpo"):
        assert json.loads((tmp_path / run / "summary.json").read_text())["tokens"] > 0
    assert Template.of(GPT.load(tmp_path / "ppo" / "last")).text == Template().text  # PPO kept the SFT model's template


def test_cli_reports_bad_data_in_one_line(base_ckpt, tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": "One morning,", "response": " it rained."}) + "\nnot json\n"
                    + json.dumps({"prompt": "At noon,", "response": " it was sunny."}) + "\n")
    assert finetune("sft", "--ckpt", str(base_ckpt), "--out", str(tmp_path / "sft"), "--data", str(data), *FAST[:6]) == 0
    err = capsys.readouterr().err
    assert "nanolens finetune sft: warning:" in err and "line 2: not valid JSON" in err
    data.write_text(json.dumps({"prompt": "x", "response": "caf\u00e9"}) + "\n" + json.dumps({"prompt": "y", "response": "z"}) + "\n")
    assert finetune("sft", "--ckpt", str(base_ckpt), "--out", str(tmp_path / "sft2"), "--data", str(data), *FAST[:6]) == 2
    assert "line 1" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_compare_trains_every_stage_and_writes_the_table(base_ckpt, tmp_path):
    out = tmp_path / "cmp"
    assert finetune("compare", "--ckpt", str(base_ckpt), "--out", str(out), "--quick") == 0
    table = (out / "comparison.md").read_text()
    for row in ("| base |", "base + SFT template", "steered (mean_difference", "| sft |", "| ppo |", "| dpo |"):
        assert row in table
    assert "reward model: held-out accuracy" in table and (out / "ppo" / "ppo_curves.png").is_file()
