"""Training helpers shared by the SFT, reward, DPO and PPO stages."""
