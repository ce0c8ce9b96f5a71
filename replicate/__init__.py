"""replicate: reproducibility audits and paper replication for deep learning.

Conventions made explicit (replicate.conventions), hyperparameters converted between them exactly,
each conversion proven by training both sides, and verdicts over seeds (replicate.verdict).
"""
__version__ = "0.1.0"
