"""Training helpers shared by the trainers: callbacks, mixing, curricula, stability, checkpoints."""
