"""What one demo run does and how big it is: `DemoPlan` (the default, about five minutes on a
laptop CPU; `DemoPlan.quick()` is what the tests run), and the methods and contrasts it uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

METHODS = ("contrast_pair", "mean_difference", "pca", "probe", "random")


SENTIMENT_CONTRAST = ("The sky was bright and she felt happy.", "The sky was grey and she felt sad.")


SHAKESPEARE_CONTRAST = ("I love thee, and my heart is glad.", "I hate thee, and my heart is sad.")


@dataclass
class DemoPlan:
    """Sizes of one demo run (`quick` is what the tests run)."""

    corpus_chars: int = 1_000_000
    preset: str = "modern"  # RoPE + RMSNorm + SwiGLU: on this corpus it learns ~2x faster per token than gpt2
    tokenizer: str = "bpe"  # word-sized tokens: in the same minutes the model learns to carry the sentiment, chars do not
    vocab_size: int | None = 1024
    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    block_size: int = 128
    batch_size: int = 16
    learning_rate: float = 3e-3
    min_lr: float = 3e-4
    warmup_iters: int = 30
    train_seconds: float = 150.0  # ~600 iterations on a quiet 2-core CPU; 140 s (~540) steered visibly worse
    min_iters: int = 100
    max_iters: int = 3000
    eval_iters: int = 10
    probe_texts: int = 600
    pairs: int = 128
    select_pairs: int = 10
    select_coeffs: tuple = (0.1, 0.2, 0.4, 0.8)  # relative coefficients tried for the layer choice
    max_nll_shift: float = 0.3  # nats per token the chosen coefficients may cost (median over methods)
    report_prompts: int = 12
    report_samples: int = 4
    max_new_tokens: int = 48  # about three sentences: enough for the mood to show, and a quarter cheaper than 64
    read: str = "sentence"  # where mean-diff / PCA read the pairs: the reveal "sentence" (mean over it) or "last" token
    temperature: float = 0.8
    val_windows: int = 16
    choose_low: float = 0.05  # each method's coefficients: the smallest reaching <= 5% / >= 95% positive
    choose_high: float = 0.95
    max_ppl_ratio: float = 2.5  # ... among coefficients whose perplexity stays within 2.5x the unsteered one
    control_draws: int = 8  # the confirmation's control: random directions of equal norm, pooled (one draw is noisy:
    control_samples: int = 2  # its projection on the sentiment varies), each with fewer samples per opening
    confirm_prompts: int = 24  # fresh held-out openings for the confirmation of the best method
    confirm_samples: int = 4
    gender_pairs: int = 128  # matched stories for the second direction (sentiment corpus only)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def quick(cls) -> "DemoPlan":
        return cls(corpus_chars=60_000, vocab_size=400, n_layer=2, n_embd=32, n_head=2, block_size=64, batch_size=16,
                   learning_rate=3e-3, min_lr=3e-4, warmup_iters=5, train_seconds=0, min_iters=40, max_iters=40,
                   eval_iters=2, probe_texts=80, pairs=16, select_pairs=4, select_coeffs=(0.2, 0.4), report_prompts=3,
                   report_samples=2, max_new_tokens=24, val_windows=4, control_draws=2, control_samples=1, confirm_prompts=2,
                   confirm_samples=2, gender_pairs=8)
