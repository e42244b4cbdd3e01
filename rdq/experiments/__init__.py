"""Hydra experiment apps, one per family: ``python -m rdq.experiments.<family>``."""
