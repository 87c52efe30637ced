"""Derived tables: summaries computed from the stored measurements, each with its n and a 95% CI."""

from .sequential import *  # noqa: F401,F403
