"""Hydra experiment apps, one per family: ``python -m experiments.<family>``."""
