"""How much of an optimised ROME change the edited weights deliver on each probe's own key.

ROME/MEMIT build a rank-one update for the prefix-averaged key k* at the subject's last token:
dW = delta u^T / (u . k*), u = C^-1 k*. A probe whose key at the subject's last token is k gets
dW k = delta (u . k) / (u . k*): the *delivered fraction* f(k) = (u . k) / (u . k*) of the change the value
optimisation saw. f near 1 means the edit reaches that prompt as optimised; f near 0 means the weights
do not carry it out there, whatever the optimisation reported.

This script measures f on the plain prompt and on every paraphrase that names the subject, for a stored case
set and for a CounterFact-format file, under the mechanics variants below, and writes one JSON. Nothing is
edited: only keys are read (forward passes stopped at the edited layer) and C comes from the usual cache.

Variants (compute.editors.rome's choice was made from this measurement):
- `shipped-tokenizer`: the tokenizer as shipped (SmolLM2 adds no BOS): a prompt that begins with the subject
  puts it at position 0-1, the attention-sink position.
- `bare-key-half`: the same, but k* weights the bare prompt's key 1/2 and the prefixed keys 1/2 together.
- `leading-token`: one fixed document-start token (<|endoftext|>) in front of every input, edits and probes.
- `all-keys`: the update direction compute.editors.rome.update_direction uses: u . k_j = 1 on every key the
  value optimisation used (the bare prompt's and each prefixed one), least disturbance of C otherwise.
- `leading-token+all-keys`: both.

Result (benchmarks/results/key-delivery-2026-12-05.json): see the README's ROME section. EditScope uses
`all-keys` with the tokenizer as shipped: it delivers the full change on every plain prompt, subject-initial
ones included, with an update 1.1x the norm of the prefix-mean one; the leading token adds a few points on
paraphrases but would change every probe of every study, so it is measured here and not used.

Usage:
  python benchmarks/key_delivery.py --store store/results.sqlite --set smollm2-135m-n240-s0 \
      --counterfact benchmarks/data/counterfact_subject_initial.json --out benchmarks/results/key-delivery.json

benchmarks/data/counterfact_subject_initial.json is a check set we wrote for this (40 CounterFact-format
records, every prompt and paraphrase beginning with the subject: capitals, cities, companies, people).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compute.cases import EditCase  # noqa: E402
from compute.covariance import layer_covariance  # noqa: E402
from compute.editors.base import EditRequest  # noqa: E402
from compute.editors.rome import ROMEHyperParams, context_prefixes, subject_keys  # noqa: E402
from compute.models import ModelError, default_cache_dir, load_model  # noqa: E402

THRESHOLD = 0.8  # the goal: delivered fraction >= 0.8 on the plain prompt


def with_leading_token(lm, token: str = "<|endoftext|>"):
    """The same model with a tokenizer that puts `token` in front of every input encoded with special tokens
    (a document start: the subject of a prompt that begins with it then never sits at position 0)."""
    import copy

    from tokenizers.processors import TemplateProcessing

    tok = copy.deepcopy(lm.tokenizer)
    tid = tok.get_vocab()[token]
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{token} $A", pair=f"{token} $A $B:1", special_tokens=[(token, tid)]
    )
    if tok("a").input_ids[0] != tid:
        raise ModelError(f"could not put {token!r} in front of every input")
    return type(lm)(model=lm.model, tokenizer=tok, arch=lm.arch, name=lm.name + "+lead", source=lm.source)


def _probe_prompts(case: EditCase) -> list[tuple[str, str]]:
    """(kind, prompt) for the plain prompt and each paraphrase that names the subject."""
    out = [("plain", case.prompt)]
    for probe in case.probes_of("paraphrase"):
        if case.subject in probe.text:
            out.append(("paraphrase", probe.text))
    return out


def delivered(lm, layer: int, case: EditCase, prefixes, cov: torch.Tensor, bare_weight: float | None,
              all_keys: bool = False) -> dict:
    """Delivered fraction on each probe prompt of a case, and whether its plain prompt starts with the subject.

    all_keys: u is the C-weighted minimum-norm direction with u . k_j = 1 for every prefix key k_j (bare prompt
    included), the update every key of the value optimisation receives in full (compute.editors.rome); the
    row `u_norm_ratio` compares its norm with the prefix-mean u / (u . k*) of the other variants.
    """
    request = EditRequest.from_case(case)
    keys = subject_keys(lm, layer, [request], prefixes)[0].double()  # [T, d_in]; row 0: the bare prompt
    k_star = keys.mean(dim=0) if bare_weight is None else bare_weight * keys[0] + (1 - bare_weight) * keys[1:].mean(0)
    u = torch.linalg.solve(cov.double(), k_star)  # [d_in]
    u = u / float(u @ k_star)  # delivers exactly 1 at k*
    ratio = 1.0
    if all_keys:
        from compute.editors.rome import update_direction

        u_all = update_direction(keys, cov)
        ratio = float(u_all.norm() / u.norm())
        u = u_all
    rows = []
    for kind, text in _probe_prompts(case):
        k = subject_keys(lm, layer, [EditRequest(case.subject, text, case.new_object)], ("",))[0, 0].double()
        rows.append({"kind": kind, "fraction": round(float(u @ k), 4)})
    return {
        "case_id": case.case_id,
        "relation": case.relation,
        "subject_initial": case.prompt.startswith(case.subject),
        "plain": rows[0]["fraction"],
        "paraphrases": [r["fraction"] for r in rows[1:]],
        "u_norm_ratio": round(ratio, 4),
    }


def summarise(rows: list[dict]) -> dict:
    def share(values):
        return {"n": len(values), "share_ge_0.8": round(sum(v >= THRESHOLD for v in values) / max(len(values), 1), 4),
                "median": round(statistics.median(values), 4) if values else None,
                "min": round(min(values), 4) if values else None}

    initial = [r for r in rows if r["subject_initial"]]
    other = [r for r in rows if not r["subject_initial"]]
    return {
        "plain": share([r["plain"] for r in rows]),
        "plain_subject_initial": share([r["plain"] for r in initial]),
        "plain_other": share([r["plain"] for r in other]),
        "paraphrase": share([f for r in rows for f in r["paraphrases"]]),
        "u_norm_ratio_median": round(statistics.median(r["u_norm_ratio"] for r in rows), 4) if rows else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", default="store/results.sqlite")
    ap.add_argument("--set", default="smollm2-135m-n240-s0")
    ap.add_argument("--counterfact", default="benchmarks/data/counterfact_subject_initial.json")
    ap.add_argument("--layer", type=int, default=3)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--variants", default=None, help="comma-separated subset of the variants (default: all)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from compute.formats import load_cases_file
    from store.db import Store
    from store import queries
    from compute.cases import case_from_rows

    st = Store.open(args.store, readonly=True)
    df = queries.cases(st.conn, case_set=args.set)
    probes = queries.probes_of_set(st.conn, args.set)
    by_case: dict[str, list] = {}
    for p in probes.to_dicts():
        by_case.setdefault(p["case_id"], []).append(p)
    stored = [case_from_rows(r, by_case.get(r["case_id"], [])) for r in df.sort("case_id").to_dicts()[: args.limit]]
    cf = load_cases_file(Path(args.counterfact), "counterfact", "key-delivery-check")

    hp = ROMEHyperParams(layer=args.layer)
    cache = default_cache_dir()
    result = {"command": " ".join(sys.argv), "layer": args.layer, "case_set": args.set,
              "counterfact": args.counterfact, "threads": torch.get_num_threads(),
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "variants": {}}
    start = time.time()
    variants = (("shipped-tokenizer", False, None, False), ("bare-key-half", False, 0.5, False),
                ("leading-token", True, None, False), ("all-keys", False, None, True),
                ("leading-token+all-keys", True, None, True))
    shipped = load_model()
    for name, leading, bare, all_keys in variants:
        if args.variants and name not in args.variants.split(","):
            continue
        lm = with_leading_token(shipped) if leading else shipped
        prefixes = context_prefixes(lm, hp.n_prefixes, hp.prefix_tokens, cache)
        cov = layer_covariance(lm, args.layer, hp.cov_n_tokens, cache)
        with torch.no_grad():
            kb_rows = [delivered(lm, args.layer, c, prefixes, cov, bare, all_keys) for c in stored]
            cf_rows = [delivered(lm, args.layer, c, prefixes, cov, bare, all_keys) for c in cf]
        result["variants"][name] = {
            "leading_token": lm.tokenizer.convert_ids_to_tokens(lm.tokenizer("a").input_ids[:-1]) or None,
            "bare_key_weight": bare,
            "all_keys": all_keys,
            "case_set": summarise(kb_rows),
            "counterfact": summarise(cf_rows),
            "rows": {"case_set": kb_rows, "counterfact": cf_rows},
        }
        print(name, json.dumps({k: v for k, v in result["variants"][name].items() if k != "rows"}), flush=True)
    result["seconds"] = round(time.time() - start, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
