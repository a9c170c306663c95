"""Adapters to the ecosystem's parallel APIs (joblib, so scikit-learn's n_jobs)."""
