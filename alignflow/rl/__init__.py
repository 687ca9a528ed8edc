"""Reinforcement learning from a reward model: PPO's own loop (pure maths, rollouts, trainer) and
GRPO/RLOO on TRL's trainers."""
