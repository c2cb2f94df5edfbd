"""REINFORCE leave-one-out (RLOO) against the platform's reward model, with TRL.

A critic-free online method (Ahmadian et al. 2024): each prompt gets
`num_generations` completions, and each completion's baseline is the mean reward
of the other completions of its prompt. TRL's RLOO puts the KL to the reference
(`beta`) into the sequence reward, as PPO does. The reward is the reward model's
score through `inference.scoring.reward_function`, a graded signal: a group whose
rewards are all equal teaches nothing.

The policy and artifact follow PPO's rule (see training/ppo.py): a parent's
adapter is merged into the base; all weights train (or, with `use_lora`, a new
adapter whose disabled state is the reference when `beta` > 0); the artifact is
the full model, or the adapter when LoRA trained on a parent without one. The
fields and the run are GRPO's (training/grpo.py: `GroupConfig`, `train_group`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from training.grpo import GroupConfig, train_group
from training.progress import Reporter


@dataclass
class RLOOConfig(GroupConfig):
    """What an RLOO stage needs; field names follow `trl.RLOOConfig` where they are TRL's."""

    METHOD: ClassVar[str] = "rloo"


def train(
    config: RLOOConfig,
    *,
    data_path: Path | None,
    output_dir: Path,
    reporter: Reporter,
    resume_from: Path | None = None,
) -> dict[str, Any]:
    """Optimise the policy with RLOO on the prompts of `data_path`; save it into `output_dir`.

    Return TRL's last logged metrics (reward, reward_std, kl, ...) plus `steps`
    and `stopped`.
    """
    from trl import RLOOConfig as TRLRLOOConfig
    from trl import RLOOTrainer

    return train_group(
        config,
        TRLRLOOConfig,
        RLOOTrainer,
        {},
        data_path=data_path,
        output_dir=output_dir,
        reporter=reporter,
        resume_from=resume_from,
    )
