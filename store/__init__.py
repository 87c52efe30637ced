"""EditScope's results store: one SQLite file of runs, knowledge base, cases and measurements.

`store.db` opens, validates, migrates and writes it; `store.queries` reads it into polars frames;
`store.derived` summarises measurements (with n and 95% CIs), one module per study; `store.conventions`
declares what writers and readers agree on (run-level rows, scopes, the held rule, series labels);
`store.stats` holds rank statistics; `store.metrics` declares what each metric means; `store.schema` holds
the migrations. This package imports only the standard library, polars and numpy, so the dashboard can browse
without torch.
"""

from .db import Store, StoreError, default_store_path, is_finalized

__all__ = ["Store", "StoreError", "default_store_path", "is_finalized"]
