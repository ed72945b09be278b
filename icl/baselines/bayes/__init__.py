"""Bayes-optimal (posterior-mean) predictors for the function classes with tractable
posteriors, and for pretraining mixtures of them."""

from icl.baselines.bayes.mixture import SUPPORTED, BayesMixture, BayesPosterior, component

__all__ = ["SUPPORTED", "BayesMixture", "BayesPosterior", "component"]
