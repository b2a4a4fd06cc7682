"""nanolens.finetune: make a trained model answer the way you want, and compare with steering.

    from nanolens.finetune import sft, train_reward_model, ppo, train_dpo, run_comparison

Stages: `sft` (response-only loss on the Trainer), `reward` (Bradley-Terry reward model),
`ppo` (clipped objective, value head, GAE, KL penalty to a frozen reference), `dpo`. Data and
templates are `data`; `evaluate_policy` measures a policy as steering is measured, and
`compare` writes the table of all of them beside a steering vector.
"""

from .compare import ComparePlan, compare, run_comparison
from .data import FinetuneDataError, Preference, PromptResponse, SFTData, Template
from .dpo import train_dpo
from .evaluate import evaluate_policy
from .ppo import PPOConfig, PPOTrainer, ppo
from .reward import RewardModel, train_reward_model
from .sft import sft

__all__ = [
    "ComparePlan", "FinetuneDataError", "PPOConfig", "PPOTrainer", "Preference", "PromptResponse", "RewardModel", "SFTData",
    "Template", "compare", "evaluate_policy", "ppo", "run_comparison", "sft", "train_dpo", "train_reward_model",
]
