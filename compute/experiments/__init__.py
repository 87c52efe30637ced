"""Experiments: robustness (study A), layer sweeps; each writes runs into the store and can resume."""
