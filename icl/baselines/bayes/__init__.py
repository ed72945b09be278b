"""Bayes-optimal (posterior-mean) predictors for the function classes with tractable
posteriors, and for pretraining mixtures of them."""

from icl.baselines.bayes.mixture import BayesMixture, BayesPosterior, BayesTrain, component
from icl.baselines.bayes.posteriors import POSTERIORS

__all__ = ["POSTERIORS", "BayesMixture", "BayesPosterior", "BayesTrain", "component"]
