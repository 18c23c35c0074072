"""Training: the LightningModule around the set-sum model, its metrics, callbacks, checkpoints,
plateau rule and W&B tracking, and the LightningCLI that runs them (:mod:`.runner`)."""
