"""Training: its config (config.py, no Lightning), the step stream, the prefix loss and the
LightningModule. Nothing is re-exported, so importing the config does not import Lightning."""
