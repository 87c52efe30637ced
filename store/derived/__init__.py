"""Derived tables: summaries computed from the stored measurements, each with its n and a 95% CI.

Pure functions `f(conn, ...) -> pl.DataFrame` like store.queries, used by the CLI and the dashboard alike, one
module per study; every name is re-exported here, so `store.derived.<name>` is the one way to reach them:

- `robustness`: study A, pre-edit knowledge, robustness across rephrase types, popularity correlations;
- `sequential`: study B's curves, events and phases as stored, forgetting by age, headlines, order means;
- `verdicts`: study B's verdicts derived from a run's stored rows (phases, disabling edits, collapse, ...);
- `abilities`: study C, general-ability scores and editing performance;
- `sweeps`, `cases`: hyperparameter sweeps, one case across runs;
- `labels`, `common`: run labels and the intervals the studies share.

The conventions the tables read (run-level rows, scopes, the held rule, series labels) live in
store.conventions; RUN_LEVEL and SEQUENTIAL_SERIES are re-exported here as before.
"""

from ..conventions import RUN_LEVEL, SEQUENTIAL_SERIES
from .abilities import ability_order_means, ability_scores, editing_performance, start_from_unedited, up_to_common_end
from .cases import case_runs, case_view
from .common import wilson_arrays
from .labels import (CONTROL_EDITORS, MASS_EDITORS, SHIPPED_KEY_CONSTRAINT, edits_facts, is_mass_editor,
                     other_key_constraint, run_label,
                     run_labels)
from .robustness import (
    DROP_COLUMNS,
    HELD_ACC,
    POPULARITY_FEATURES,
    SMALL_N,
    WITHIN,
    WITHIN_COLUMNS,
    both_estimates,
    correlation_rows,
    edit_against_knowledge,
    knowledge_by_quartile,
    knowledge_correlations,
    popularity_bins,
    popularity_points,
    robustness_correlations,
    robustness_summary,
    store_correlations,
)
from .sequential import (
    AGE_BINS,
    PHASE_SERIES,
    forgetting_by_age,
    order_means,
    phase_series_label,
    phase_verdict,
    sequential_curves,
    sequential_events,
    sequential_headlines,
    sequential_phases,
)
from .sweeps import sweep_summary
from .verdicts import (
    CHANCE_SHARE,
    CLIFF_SERIES,
    DERIVED_EVENT_KINDS,
    DISABLING_MIN_SERIES,
    EFFICACY_CHANCE,
    PERPLEXITY_BLOWUP,
    PERPLEXITY_EFFECT,
    PHASE_CURVES,
    LOCAL_UPDATES,
    LOG_NORM_MAD_FLOOR,
    MIN_OUTLIER_EDITS,
    PHASE_MIN_POINTS,
    abrupt_change_events,
    collapse_event,
    derive_sequential_events,
    disabling_edit_events,
    large_update_events,
    local_log_residuals,
    panel_floor_events,
    phase_events,
    planned_edits,
    rederive_sequential_events,
    run_series,
    sequential_rules,
    usability,
)

__all__ = [
    "RUN_LEVEL", "SEQUENTIAL_SERIES",
    "ability_order_means", "ability_scores", "editing_performance", "start_from_unedited", "up_to_common_end",
    "case_runs", "case_view",
    "wilson_arrays",
    "CONTROL_EDITORS", "MASS_EDITORS", "SHIPPED_KEY_CONSTRAINT", "edits_facts", "is_mass_editor",
    "other_key_constraint", "run_label",
    "run_labels",
    "DROP_COLUMNS", "HELD_ACC", "POPULARITY_FEATURES", "SMALL_N", "WITHIN", "WITHIN_COLUMNS", "both_estimates", "correlation_rows",
    "edit_against_knowledge", "knowledge_by_quartile",
    "knowledge_correlations", "popularity_bins", "popularity_points", "robustness_correlations",
    "robustness_summary", "store_correlations",
    "AGE_BINS", "PHASE_SERIES", "forgetting_by_age", "order_means", "phase_series_label", "phase_verdict",
    "sequential_curves", "sequential_events", "sequential_headlines", "sequential_phases",
    "sweep_summary",
    "CHANCE_SHARE", "CLIFF_SERIES", "DERIVED_EVENT_KINDS", "DISABLING_MIN_SERIES", "EFFICACY_CHANCE", "PERPLEXITY_BLOWUP", "PERPLEXITY_EFFECT", "PHASE_CURVES",
    "LOCAL_UPDATES", "LOG_NORM_MAD_FLOOR", "MIN_OUTLIER_EDITS", "PHASE_MIN_POINTS", "abrupt_change_events", "collapse_event", "derive_sequential_events",
    "disabling_edit_events", "large_update_events", "local_log_residuals", "panel_floor_events", "phase_events",
    "planned_edits", "rederive_sequential_events", "run_series",
    "sequential_rules", "usability",
]
