"""The model this process serves and what watches it, in memory (no Redis, no HTTP): the served
model and its lock, the trainers' configurations, shadow challengers, production scoring of
served predictions, the status page's history, and loading a checkpoint into all of them."""
