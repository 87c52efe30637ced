"""Edit mechanics: the update reaches every prompt the edit was optimised on (subject-initial ones included),
per-edit diagnostics, refusal of non-finite hyperparameters and updates, and one transaction per unit."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from compute.editors import EditContext, EditorError, EditRequest, apply_edit, undo
from compute.editors.base import parse_hparams, weight_name
from compute.editors.diagnostics import delivered_fractions, edit_diagnostics
from compute.editors.memit import MEMITHyperParams
from compute.editors.rome import ROMEHyperParams, context_prefixes, subject_keys, update_direction

pytestmark = pytest.mark.usefixtures("one_thread")

# The subject begins the prompt, as in "{subject} is a city in": its key sits at position 0-1. A random tiny
# model carries almost nothing from one position to the next (tests/test_rome.py), so the prompt also ends
# with the subject: the bare prompt is the subject alone, the prefixed ones put text before it.
INITIAL = EditRequest("France", "France", "Asia", "Paris", case_id="c1")
HP = ROMEHyperParams(layer=0, v_steps=8, v_weight_decay=0.0, clamp_norm_factor=1000.0, n_prefixes=3,
                     prefix_tokens=4, cov_n_tokens=600)


@pytest.fixture()
def ctx(wiki_cache):
    return EditContext(cache_dir=wiki_cache)


def test_the_update_direction_delivers_exactly_one_on_every_key_and_is_romes_with_one_key():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(16, 16, generator=gen, dtype=torch.float64)
    cov = a @ a.T + torch.eye(16, dtype=torch.float64)
    keys = torch.randn(5, 16, generator=gen, dtype=torch.float64)
    u = update_direction(keys, cov, ridge=0.0)
    assert torch.allclose(keys @ u, torch.ones(5, dtype=torch.float64), atol=1e-9)
    one = keys[:1]
    expected = torch.linalg.solve(cov, one[0]) / (one[0] @ torch.linalg.solve(cov, one[0]))
    assert torch.allclose(update_direction(one, cov, ridge=0.0), expected)
    # least disturbance: any other u' with the same constraints has u'^T C u' >= u^T C u
    null = torch.linalg.svd(keys).Vh[5:]  # directions orthogonal to every key
    other = u + null.T @ torch.randn(11, generator=gen, dtype=torch.float64)
    assert torch.allclose(keys @ other, torch.ones(5, dtype=torch.float64), atol=1e-9)
    assert other @ cov @ other > u @ cov @ u


@pytest.mark.parametrize("model", ["llama", "gpt2"])
def test_a_subject_initial_rome_edit_delivers_its_whole_change_on_the_plain_prompt(model, request, ctx):
    lm = request.getfixturevalue(model)
    delivered = {}
    for constraint in ("all", "mean"):
        hp = dataclasses.replace(HP, key_constraint=constraint)
        result = apply_edit(lm, [INITIAL], "ROME", hp, ctx)
        try:
            delivered[constraint] = delivered_fractions(lm, result, {})[0]["plain"]
            if constraint == "mean":
                # the generic measure is (u . k) / (u . k*) for a ROME update
                prefixes = context_prefixes(lm, hp.n_prefixes, hp.prefix_tokens, ctx.cache_dir)
                keys = subject_keys(lm, 0, [INITIAL], prefixes)[0].double()
                w = lm.down_proj(0).weight.double()
                w0 = result.originals[weight_name(lm, 0)].double()
                dw = (w - w0).T if lm.arch.down_proj_transposed else (w - w0)
                k_star = keys.mean(0)
                ratio = float((dw @ keys[0]).norm() / (dw @ k_star).norm())
                assert abs(delivered["mean"]) == pytest.approx(ratio, rel=1e-4)
        finally:
            undo(lm, result)
    assert delivered["all"] == pytest.approx(1.0, abs=1e-3)
    assert abs(delivered["mean"] - 1.0) > 1e-2  # the prefix-mean key alone does not reach the bare prompt


def test_memit_with_every_key_reaches_the_bare_prompt_better_than_the_mean_key(llama, ctx):
    hp = MEMITHyperParams(layers=(0, 1), v_steps=8, v_weight_decay=0.0, clamp_norm_factor=1000.0, n_prefixes=3,
                          prefix_tokens=4, cov_n_tokens=600, lam=1.0)
    got = {}
    for constraint in ("all", "mean"):
        result = apply_edit(llama, [INITIAL], "MEMIT", dataclasses.replace(hp, key_constraint=constraint), ctx)
        try:
            got[constraint] = delivered_fractions(llama, result, {})[0]["plain"]
        finally:
            undo(llama, result)
    assert abs(got["all"] - 1.0) < abs(got["mean"] - 1.0)
    assert got["all"] == pytest.approx(1.0, abs=0.2)


def _delivered(update: torch.Tensor, keys: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """Each key's share of its own residual that the update delivers: <dW k_j, r_j> / ||r_j||^2."""
    return ((keys @ update.T) * residual).sum(dim=1) / (residual**2).sum(dim=1)


def test_balanced_rows_give_every_key_the_same_share_where_memit_and_alphaedit_starve_the_hard_ones():
    from compute.editors.alphaedit import alphaedit_update
    from compute.editors.memit import balance_rows, memit_reach, memit_update

    gen = torch.Generator().manual_seed(1)
    q = torch.linalg.qr(torch.randn(8, 8, generator=gen, dtype=torch.float64)).Q
    cov = q @ torch.diag(torch.tensor([50.0, 20.0, 5.0, 2.0, 1.0, 0.5, 0.2, 0.1], dtype=torch.float64)) @ q.T
    # four keys along C's eigen-directions (so K^T C^-1 K is diagonal): g = k^T C^-1 k from 0.02 to 20
    keys = torch.stack([q[:, 0], q[:, 2], q[:, 4], q[:, 6] * 2.0])
    residual = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    g = memit_reach(keys, cov)
    assert torch.allclose(g, torch.tensor([0.02, 0.2, 1.0, 20.0], dtype=torch.float64))
    lam = 1.0
    plain = _delivered(memit_update(keys, residual, cov, lam), keys, residual)
    assert torch.allclose(plain, g / (lam + g))  # a key of small reach gets almost nothing (0.02 -> 2%)
    bk, br = balance_rows(keys, residual, g)
    balanced = _delivered(memit_update(bk, br, cov, lam), keys, residual)
    med = g.median()
    assert torch.allclose(balanced, torch.full((4,), float(med / (lam + med)), dtype=torch.float64))
    # AlphaEdit: reach = ||U^T k||^2 in the null-space basis U; balanced rows again deliver alike
    basis = q[:, 4:]  # the four smallest directions
    keys_a = torch.stack([q[:, 4] * 0.1 + q[:, 0], q[:, 5], q[:, 6] * 3.0, q[:, 7] * 0.5 + q[:, 1]])
    reach_a = ((keys_a @ basis) ** 2).sum(dim=1)
    plain_a = _delivered(alphaedit_update(keys_a, residual, basis, None, 0.5), keys_a, residual)
    assert torch.allclose(plain_a, reach_a / (0.5 + reach_a))
    ka, ra = balance_rows(keys_a, residual, reach_a)
    bal_a = _delivered(alphaedit_update(ka, ra, basis, None, 0.5), keys_a, residual)
    assert float(bal_a.max() - bal_a.min()) < 1e-9 and float(bal_a.min()) > float(plain_a.min()) * 10


def test_reach_spreading_is_memits_even_spread_for_alike_keys_and_leaves_unreachable_layers_out():
    from compute.editors.memit import layer_share

    alike = torch.full((5, 3), 7.0, dtype=torch.float64)
    for i in range(5):
        assert torch.allclose(layer_share(alike, i), torch.full((3,), 1.0 / (5 - i), dtype=torch.float64))
    # a prompt whose key layers 3-5 hardly reach (as 'Louga is a city in' at MEMIT's layers 1-5) goes to layers 1-2
    sink = torch.tensor([4870.0, 1040.0, 48.0, 42.0, 50.0], dtype=torch.float64)[:, None]
    first = float(layer_share(sink, 0)[0])
    assert first == pytest.approx(4870 / 6050) and float(layer_share(sink, 1)[0]) == pytest.approx(1040 / 1180)
    assert float(layer_share(sink, 4)[0]) == 1.0  # the last layer takes whatever is left


def test_exact_rows_get_their_whole_change_and_the_rest_keep_the_least_squares_optimum():
    from compute.editors.alphaedit import alphaedit_update
    from compute.editors.memit import memit_reach, memit_update

    gen = torch.Generator().manual_seed(2)
    a = torch.randn(10, 10, generator=gen, dtype=torch.float64)
    cov = a @ a.T / 10 + 0.1 * torch.eye(10, dtype=torch.float64)
    keys = torch.randn(5, 10, generator=gen, dtype=torch.float64)
    keys[0] *= 0.01  # a key the solve hardly reaches (a subject-initial prompt's), fitted exactly below
    residual = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    lam = 3.0
    assert float(memit_reach(keys[:1], cov)[0]) < 0.01 * lam
    free = memit_update(keys, residual, cov, lam)
    exact = torch.tensor([0, 2])
    fit = memit_update(keys, residual, cov, lam, exact)
    assert float(_delivered(free, keys, residual)[0]) < 0.05  # least squares alone: almost nothing
    assert torch.allclose(keys[exact] @ fit.T, residual[exact], atol=1e-4)  # exact rows: all of it (ridge aside)

    def objective(dw):  # MEMIT's: the misses plus lam tr(dW C dW^T)
        return float(((keys @ dw.T - residual) ** 2).sum() + lam * torch.trace(dw @ cov @ dw.T))

    # the optimum among updates that keep the exact rows: any feasible step (orthogonal to those keys) costs more
    null = torch.linalg.svd(keys[exact]).Vh[2:]  # [8, 10]: directions both exact keys ignore
    for _ in range(3):
        step = torch.randn(4, 8, generator=gen, dtype=torch.float64) @ null * 0.05
        assert torch.allclose(keys[exact] @ (fit + step).T, residual[exact], atol=1e-4)
        assert objective(fit + step) > objective(fit)
    # AlphaEdit: the same constraint inside its null space (U^T k must reach the key)
    q = torch.linalg.qr(torch.randn(10, 10, generator=gen, dtype=torch.float64)).Q
    basis = q[:, 4:]
    fit_a = alphaedit_update(keys, residual, basis, None, 0.5, exact)
    assert torch.allclose(keys[exact] @ fit_a.T, residual[exact], atol=1e-4)
    assert torch.allclose(fit_a @ q[:, :4], torch.zeros(4, 4, dtype=torch.float64), atol=1e-9)  # in the null space
    assert torch.allclose(alphaedit_update(keys, residual, basis, None, 0.5, None),
                          alphaedit_update(keys, residual, basis, None, 0.5))


def test_more_exact_rows_than_the_key_space_holds_are_refused_not_blown_up():
    """AlphaEdit fits the plain prompts in null-space coordinates (176 dimensions at layer 3 of SmolLM2-135M):
    a batch with more requests than that cannot have every plain prompt exact (the ridge returned a compromise
    that delivered none of them: 8 rows in 6 dimensions missed by 2.1 of a residual of 5.4). Refused with what to
    do instead; as many rows as dimensions still fit."""
    from compute.editors.alphaedit import alphaedit_update

    gen = torch.Generator().manual_seed(3)
    keys = torch.randn(8, 10, generator=gen, dtype=torch.float64)
    residual = torch.randn(8, 4, generator=gen, dtype=torch.float64)
    basis = torch.linalg.qr(torch.randn(10, 10, generator=gen, dtype=torch.float64)).Q[:, :6]  # 6 dimensions
    with pytest.raises(EditorError, match="8 plain prompts .* key space of 6 dimensions.*key_constraint 'all'"):
        alphaedit_update(keys, residual, basis, None, 0.5, torch.arange(8))
    fit = alphaedit_update(keys[:6], residual[:6], basis, None, 0.5, torch.arange(6))
    assert torch.allclose(keys[:6] @ fit.T, residual[:6], atol=1e-3)


def test_two_requests_on_one_key_share_it_without_blowing_the_update_up():
    """Two prompts that open with one subject ("Los Angeles is a city in" for city_country and for us_city_state)
    put the same plain key in a batch, with different changes: no update delivers both, and the exact fit gives
    the key the mean of the two (the ridge's near-singular direction meets k1 - k2 = 0), at the size of an
    update without the second request, not a blown-up one (on the default model, MEMIT's batch of those two:
    ||dW||/||W|| 0.030 against 0.043 and 0.035 alone)."""
    from compute.editors.memit import memit_update

    gen = torch.Generator().manual_seed(2)
    a = torch.randn(10, 10, generator=gen, dtype=torch.float64)
    cov = a @ a.T / 10 + 0.1 * torch.eye(10, dtype=torch.float64)
    keys = torch.randn(5, 10, generator=gen, dtype=torch.float64)
    keys[3] = keys[1]
    residual = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    alone = memit_update(keys[[0, 1, 2, 4]], residual[[0, 1, 2, 4]], cov, 3.0, torch.tensor([0, 1]))
    both = memit_update(keys, residual, cov, 3.0, torch.tensor([0, 1, 3]))
    assert torch.allclose(keys[1] @ both.T, (residual[1] + residual[3]) / 2, atol=1e-6)
    assert torch.allclose(keys[0] @ both.T, residual[0], atol=1e-6)
    assert float(both.norm()) < 2 * float(alone.norm())


def test_memit_with_the_plain_key_fitted_exactly_gives_the_plain_prompt_its_whole_target(llama, ctx, monkeypatch):
    """With key_constraint "plain" every layer delivers the plain prompt's share exactly and the last layer closes
    what is left, so the plain prompt's output at the last edited layer moves by the optimised delta itself."""
    from compute.editors import memit
    from compute.editors.rome import subject_block_outputs

    deltas = []

    def spy(*args, **kwargs):
        values = optimise_values(*args, **kwargs)
        deltas.extend(v.delta.double() for v in values)
        return values

    optimise_values = memit.optimise_values
    monkeypatch.setattr(memit, "optimise_values", spy)
    hp = MEMITHyperParams(layers=(0, 1), v_steps=8, v_weight_decay=0.0, clamp_norm_factor=1000.0, n_prefixes=3,
                          prefix_tokens=4, cov_n_tokens=600, lam=5000.0)
    before = subject_block_outputs(llama, 1, [INITIAL], ("",))[0, 0].double()
    miss = {}
    for constraint in ("all", "plain"):
        deltas.clear()
        result = apply_edit(llama, [INITIAL], "MEMIT", dataclasses.replace(hp, key_constraint=constraint), ctx)
        try:
            change = subject_block_outputs(llama, 1, [INITIAL], ("",))[0, 0].double() - before
        finally:
            undo(llama, result)
        (delta,) = deltas
        miss[constraint] = float((change - delta).norm() / delta.norm())
    assert miss["all"] > 0.3  # lam 5000 lets the least squares deliver only part of it (0.58 here)
    assert miss["plain"] < 1e-3


@pytest.mark.parametrize("constraint", ["balanced", "reach", "plain"])
@pytest.mark.parametrize("editor", ["MEMIT", "AlphaEdit"])
def test_a_balanced_spread_edit_runs_on_the_tiny_model_and_undoes_bit_identically(editor, constraint, llama, ctx):
    from compute.editors import get_editor

    before = {n: p.detach().clone() for n, p in llama.model.named_parameters()}
    fields = dict(layers=[0, 1], v_steps=8, v_weight_decay=0.0, clamp_norm_factor=1000.0, n_prefixes=3,
                  prefix_tokens=4, cov_n_tokens=600, key_constraint=constraint)
    hp = parse_hparams(get_editor(editor).hparams, fields)
    result = apply_edit(llama, [INITIAL], editor, hp, ctx)
    try:
        delivered = delivered_fractions(llama, result, {})[0]["plain"]
        assert math.isfinite(delivered) and delivered > 0.0
        assert any(not torch.equal(before[n], p) for n, p in llama.model.named_parameters())
    finally:
        undo(llama, result)
    assert all(torch.equal(before[n], p) for n, p in llama.model.named_parameters())


def test_a_multi_layer_edits_delivery_is_also_read_where_its_target_was_set(llama, ctx):
    from compute.editors.diagnostics import delivered_at_output
    from compute.editors.rome import subject_block_outputs

    hp = MEMITHyperParams(layers=(0, 1), v_steps=8, v_weight_decay=0.0, clamp_norm_factor=1000.0, n_prefixes=3,
                          prefix_tokens=4, cov_n_tokens=600, lam=1.0)
    result = apply_edit(llama, [INITIAL], "MEMIT", hp, ctx)
    prefixes = result.info["prefixes"]
    try:
        edited = {n: p.detach().clone() for n, p in llama.model.named_parameters()}
        got = delivered_at_output(llama, result, {})[0]
        assert all(torch.equal(edited[n], p) for n, p in llama.model.named_parameters())  # edited weights restored
        after = subject_block_outputs(llama, 1, [INITIAL], prefixes)[0].double()
        bare = subject_block_outputs(llama, 1, [INITIAL], ("",))[0, 0].double()
        rows = edit_diagnostics(llama, result, hp, "r", 1)
    finally:
        undo(llama, result)
    before = subject_block_outputs(llama, 1, [INITIAL], prefixes)[0].double()
    bare0 = subject_block_outputs(llama, 1, [INITIAL], ("",))[0, 0].double()
    mean = (after - before).mean(dim=0)
    assert got["plain"] == pytest.approx(float((bare - bare0) @ mean / (mean @ mean)), rel=1e-6)
    assert {("c1", "plain", "delivered_out")} <= {(r["case_id"], r["target"], r["name"]) for r in rows}
    one = apply_edit(llama, [INITIAL], "ROME", HP, ctx)  # one layer: f already says it
    try:
        assert delivered_at_output(llama, one, {}) == [{}]
    finally:
        undo(llama, one)


def test_diagnostics_name_every_matrix_and_the_optimisation(llama, ctx, builder):
    result = apply_edit(llama, [INITIAL], "ROME", HP, ctx)
    try:
        rows = edit_diagnostics(llama, result, HP, "run-x", 1)
        w = llama.down_proj(0).weight.double()
        w0 = result.originals[weight_name(llama, 0)].double()
    finally:
        undo(llama, result)
    got = {(r["case_id"], r["target"], r["name"]): r["value"] for r in rows}
    name = weight_name(llama, 0)
    assert got[("c1", name, "update_norm")] == pytest.approx(float((w - w0).norm()), rel=1e-6)
    assert got[("c1", name, "update_rel")] == pytest.approx(float((w - w0).norm() / w0.norm()), rel=1e-6)
    assert got[("c1", "", "steps")] == result.info["edits"][0]["steps"]
    assert got[("c1", "", "converged")] == float(result.info["edits"][0]["nll_final"] < HP.stop_nll)
    assert got[("c1", "", "clamped")] in (0.0, 1.0)
    assert ("c1", "plain", "delivered") in got
    assert all(r["run_id"] == "run-x" and r["edit_count"] == 1 for r in rows)


@pytest.mark.parametrize("editor,data,field", [
    ("ROME", {"layer": 0, "kl_weight": math.inf}, "kl_weight"),
    ("ROME", {"layer": 0, "v_lr": math.nan}, "v_lr"),
    ("ROME", {"layer": 0, "rect_top": math.nan}, "rect_top"),
    ("MEMIT", {"layers": [0, 1], "lam": math.nan}, "lam"),
    ("AlphaEdit", {"layers": [0], "l2": math.inf}, "l2"),
    ("FT-L", {"layer": 0, "norm_constraint": math.inf}, "norm_constraint"),
    ("ROME", {"layer": 0, "key_constraint": "some"}, "key_constraint"),
    ("ROME", {"layer": 0, "key_constraint": "balanced"}, "key_constraint"),  # ROME's "all" is already exact
    ("MEMIT", {"layers": [0], "key_constraint": "some"}, "key_constraint"),
])
def test_non_finite_or_unknown_hyperparameters_are_refused_by_name(editor, data, field):
    from compute.editors import get_editor

    with pytest.raises(EditorError, match=repr(field)):
        parse_hparams(get_editor(editor).hparams, data)


def test_an_update_that_is_not_finite_is_undone_and_refused(llama, ctx):
    before = {n: p.detach().clone() for n, p in llama.model.named_parameters()}
    d_in = llama.down_proj(0).weight.shape[1]
    ctx.covariance = lambda layer: torch.full((d_in, d_in), math.nan, dtype=torch.float64)
    with pytest.raises(EditorError, match="non-finite|orthogonal"):
        apply_edit(llama, [INITIAL], "ROME", HP, ctx)
    assert all(torch.equal(before[n], p) for n, p in llama.model.named_parameters())


def test_a_unit_is_written_whole_or_not_at_all(tmp_path):
    from store.db import Store

    st = Store.open(tmp_path / "s.sqlite", create=True)
    run = st.start_run(kind="robustness", model="m")
    m = [{"run_id": run, "case_id": "c", "edit_count": 1, "rephrase_type": "plain", "metric": "es", "value": 1.0}]
    bad_gen = [{"run_id": run, "case_id": "c", "edit_count": 1, "rephrase_type": "plain", "no_such_column": 1}]
    with pytest.raises(ValueError):
        st.write_unit(measurements=m, generations=bad_gen)
    assert st.conn.execute("SELECT count(*) FROM measurements").fetchone()[0] == 0
    nan = [{"run_id": run, "edit_count": 1, "case_id": "c", "target": "", "name": "steps", "value": math.nan}]
    with pytest.raises(ValueError, match="non-finite"):
        st.write_unit(measurements=m, diagnostics=nan)
    assert st.conn.execute("SELECT count(*) FROM measurements").fetchone()[0] == 0
    good = [{"run_id": run, "edit_count": 1, "case_id": "c", "target": "", "name": "steps", "value": 4.0}]
    st.write_unit(measurements=m, diagnostics=good)
    assert st.conn.execute("SELECT count(*) FROM measurements").fetchone()[0] == 1
    assert st.conn.execute("SELECT value FROM edit_diagnostics").fetchone()[0] == 4.0



# --------------------------------------------------------------------------- on the embedded default model


def _robustness_on(lm, case, tmp_path):
    """One-case ROME robustness run (plain and paraphrase probes) into a fresh store; its rows."""
    from compute.editors import load_hparams
    from compute.experiments.robustness import run_robustness
    from compute.models import default_cache_dir
    from store.db import Store

    st = Store.open(tmp_path / "r.sqlite", create=True)
    row, probes = case.to_rows()
    st.write_cases([row], probes)
    run = run_robustness(lm, [case], st, editor="ROME", hp=load_hparams("ROME", "smollm2-135m"),
                         ctx=EditContext(default_cache_dir()), rephrase_types=("plain", "paraphrase"), gen_tokens=5)
    es = dict(st.conn.execute(
        "SELECT rephrase_type, avg(value) FROM measurements WHERE run_id = ? AND metric = 'es' GROUP BY 1", (run,)))
    delivered = dict(st.conn.execute(
        "SELECT target, value FROM edit_diagnostics WHERE run_id = ? AND name = 'delivered'", (run,)))
    return es, delivered


@pytest.mark.model
@pytest.mark.slow
def test_rome_edits_a_subject_initial_knowledge_base_fact_on_the_default_model(default_lm, kb, paragraphs, tmp_path):
    from compute.cases import CaseBuilder

    case = CaseBuilder(kb, default_lm.tokenizer, paragraphs).custom_case("Toronto", "city_country", "Australia")
    assert case.prompt.startswith("Toronto")
    es, delivered = _robustness_on(default_lm, case, tmp_path)
    assert es["plain"] == 1.0 and es["paraphrase"] > 0  # the new object wins on the exact prompt and a paraphrase
    assert delivered["plain"] >= 0.8
    assert delivered["paraphrase:1"] >= 0.8  # "Toronto is located in the country of": same key as the plain prompt


@pytest.mark.model
@pytest.mark.slow
def test_rome_edits_a_subject_initial_counterfact_record_on_the_default_model(default_lm, tmp_path):
    import json

    from compute.formats import load_cases_file

    record = {"case_id": 7, "requested_rewrite": {"prompt": "{} is a company based in", "subject": "Toyota",
              "relation_id": "P159", "target_new": {"str": "Germany"}, "target_true": {"str": "Japan"}},
              "paraphrase_prompts": ["Toyota has its headquarters in"],
              "neighborhood_prompts": ["Honda is a company based in"]}
    path = tmp_path / "cf.json"
    path.write_text(json.dumps([record]))
    case = load_cases_file(path, "counterfact", "test-cf")[0]
    es, delivered = _robustness_on(default_lm, case, tmp_path)
    assert es["plain"] == 1.0 and es["paraphrase"] == 1.0
    assert delivered["plain"] >= 0.8 and delivered["paraphrase:1"] >= 0.8
