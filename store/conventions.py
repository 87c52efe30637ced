"""The store's conventions: the strings and the rule that writers (compute.experiments) and readers (store.derived,
the dashboard) must agree on, declared once.

Standard library only, so that any module (an editor, a page) can import it without pulling in polars, numpy,
torch or the rest of the store (tests/test_conventions.py checks this in a fresh process).
"""

from __future__ import annotations

RUN_LEVEL = "*"  # case_id of a sequential or batch run's run-level rows (one per scope and metric, not per case)

# Scopes: the rephrase_type of run-level rows (case_id RUN_LEVEL), naming what the row's value was measured on.
EDIT = "edit"  # each edit's own update: update_norm (||dW||_F) and update_w0 (||W0||_F); per-case rows of this
#                type (case_id a case) hold the edit's own record (edit_seconds, edit_steps, edit_target_nll)
NEWEST = "newest"  # the edits made since the previous checkpoint: es, ps, ns and their n
ALL_EDITS = "all_edits"  # every edit so far, at a checkpoint that re-checked them all: retention and forgotten
#                          (by ES and by exact match), n, n_held and n_held_em (the edits that held at first)
PANEL = "panel"  # the panel of facts the unedited model knew: panel_recall, exact_match, n (runs before the
#                  sub-panel check: exact_match after every edit)
PANEL_CHECK = "panel_check"  # the panel's first facts, checked after every edit: exact_match and its n
FREE_TEXT = "free_text"  # greedy continuations of neutral prompts: fluency (n-gram entropy, bits) and n
BATCH = "batch"  # a batch run's batch of b edits (edit_count = b): es, ps, ns, n, edit_seconds, values_from_cache

SEQUENTIAL_SCOPES = (EDIT, NEWEST, ALL_EDITS, PANEL, PANEL_CHECK, FREE_TEXT)  # compute.experiments.sequential
SCOPES = (*SEQUENTIAL_SCOPES, BATCH)  # every scope of run-level rows

# run_events kinds a sequential run's verdicts are (store.derived.derive_sequential_events): recomputed from the
# run's whole history, so a newer derivation replaces every row of these kinds, also by having none of a kind
DERIVED_EVENT_KINDS = ("phase", "large_update", "disabling_edit", "abrupt_change", "collapse", "panel_floor")

# run_events kind of a run's resumes (store.Store.resume_run: series the time, edit_count where the work went on
# from)
RESUMED_KIND = "resumed"
# run_events kinds that log a run's history, not its editing: where its rows came from (store.merge's `merged`,
# compute.plan's `plan_unit`) and its resumes; merges add them beside the target's and never replace them
LOG_EVENT_KINDS = ("merged", "plan_unit", RESUMED_KIND)

# the key of a run's config under which compute writes the traits of the editor that made it (mass_editor,
# changes_weights, keys: compute.editors.base.editor_traits); runs made before it have none (readers fall back)
TRAITS_KEY = "editor_traits"

# the meta key under which `plan snapshot` keeps the plan's status in the copy it makes (compute.plan.status_record:
# every unit's state when the copy was taken), so that a store built from part of a plan says what it lacks
PLAN_STATUS_META = "plan_status"
# the meta key under which a store records the probes it left out (Store.leave_out_unread_probes, which `plan
# snapshot` runs on the copy it makes): JSON {case set: [rephrase types]}. Probes are built deterministically from
# the knowledge base and the seed, so `python -m compute cases build` with the set's size and seed restores them.
PROBES_LEFT_OUT_META = "probes_left_out"
# the probe types every edit reads whatever its experiment (the edit's own prompt, IKE's demonstrations and the
# delivered fraction read paraphrases, every experiment measures neighbourhood), so a store never leaves them out
PROBES_ALWAYS_KEPT = ("plain", "paraphrase", "neighbourhood")
# the shapes of the plan's file and of the time `plan snapshot` records with that status: text of these shapes
# cannot carry markup or a link, so pages and the README quote it only when it has them
PLAN_FILE = r"plans/[A-Za-z0-9_-]+\.toml"
MINUTE = r"\d{4}-\d\d-\d\dT\d\d:\d\dZ"

# a float this close to zero is zero but for rounding (a bootstrap bound of a paired difference came out as
# -5e-18): findings text and dashboard tables show it as 0
ZERO = 1e-12

HELD = 0.5  # an edit holds when its ES (P(new) > P(true)) or its exact match is at least this
# a robustness run's edit held on the plain prompt when its acc there is above this (its one probe names the new
# object): the facts study A's controls read (store.queries.held_case_ids)
HELD_ACC = 0.5


def holds(es: float) -> bool:
    """Whether an edit holds: its ES (or exact match, 0 or 1) is at least HELD."""
    return es >= HELD


# (scope, metric) of a sequential run's run-level rows -> the series name a researcher reads
SEQUENTIAL_SERIES: dict[tuple[str, str], str] = {
    (NEWEST, "es"): "Newest-edit efficacy (ES)",
    (NEWEST, "ps"): "Newest-edit paraphrase score (PS)",
    (NEWEST, "ns"): "Newest-edit neighbourhood score (NS)",
    (ALL_EDITS, "retention_em"): "Retained edits (exact match)",
    (ALL_EDITS, "forgotten_em"): "Forgotten edits (exact match)",
    (ALL_EDITS, "retention"): "Retained edits",
    (ALL_EDITS, "forgotten"): "Forgotten edits",
    (EDIT, "update_norm"): "Update norm of each edit ||dW||",
    (PANEL, "panel_recall"): "Recall on the unedited fact panel",
    (PANEL, "exact_match"): "Panel exact match (runs before the sub-panel check: after every edit)",
    (PANEL_CHECK, "exact_match"): "Panel exact match, its first facts (after every edit)",
    (FREE_TEXT, "fluency"): "Fluency (n-gram entropy, bits)",
}

# A doubt probe's text holds this slot where the model's own first answer goes: the model answers the question
# freely, the slot is filled with that answer, the user pushes back, and the model answers again
# (compute.cases writes it; the pages say what it stands for where they show a probe's text)
ANSWER_SLOT = "{answer}"
ANSWER_SLOT_NOTE = (f"{ANSWER_SLOT} in a probe stands for the model's own first answer to the question, generated "
                    "before the push-back and put there when the probe is run")
