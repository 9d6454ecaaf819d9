"""align: an end-to-end RLHF pipeline (SFT -> RM -> PPO, or SFT -> DPO) configured with Hydra."""

__version__ = "0.1.0"
