"""The learner role: GRPO math (pure functions), the learner actor and checkpoints."""
