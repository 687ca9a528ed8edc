"""Reinforcement learning from human feedback: the PPO maths and, later, its trainer."""
