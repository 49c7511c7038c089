"""The learner: the one process per model that reads the event stream and trains the served
model, test-then-train, checkpointing as it goes (`loop.LearnerLoop` and its parts)."""
