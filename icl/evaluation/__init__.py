"""Evaluation: error curves of any predictor on named scenarios, and their reports."""
