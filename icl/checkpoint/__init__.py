"""Checkpoints: file names, reading (io.py), crash-safe writing (writer.py, Lightning), resume
validation (validate.py, Lightning) and loading a model (load.py). Import the submodules; reading
a checkpoint or loading a model for evaluation imports no Lightning."""
