"""Every command line the dashboard builds (dashboard/jobs.py) is parsed by the CLI's own parser
(compute.cli.build_parser), at the dashboard's limits, so a renamed flag or a stricter CLI check fails here
rather than when a visitor clicks Launch."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from compute import cli
from dashboard import commands, jobs

EDITORS = commands.editor_names()
SETS = ["tiny32", "other"]
TEMPLATES = {"capital": {"prompt": "The capital of {subject} is"}}


@pytest.fixture
def model_dir(tmp_path) -> str:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return str(folder)


def parse(argv):
    """The namespace the CLI makes of `python -m compute --store S --quiet ARGV` as jobs.start_job runs it."""
    command = jobs.command(Path("/tmp/workspace.sqlite"), argv)
    assert command[1:3] == ["-m", "compute"]
    try:
        return cli.build_parser().parse_args(command[3:])
    except SystemExit as exc:  # the parser has printed its one-line error
        pytest.fail(f"the CLI refuses the dashboard's command {command[3:]} (exit {exc.code})")


def builders(model: str) -> dict[str, list]:
    """builder name -> argv lists it makes: defaults, the dashboard's upper limits, and a local model."""
    top = commands.MAX_TEXT
    return {
        "edit_argv": [
            commands.edit_argv("France", "capital", "Rome", None, "ROME", templates=TEMPLATES, editors=EDITORS),
            commands.edit_argv("F" * top, "capital", "R" * top, "P" * top, EDITORS[-1], templates=TEMPLATES,
                           editors=EDITORS, model=model, gen_tokens=commands.MAX_GEN_TOKENS, seed=commands.MAX_SEED),
            commands.edit_argv("France", "capital", "Rome", "Paris", "MEMIT", templates=TEMPLATES, editors=EDITORS,
                           gen_tokens=1),
        ],
        "robustness_argv": [
            commands.robustness_argv("ROME", 1, editors=EDITORS),
            commands.robustness_argv("FT-L", commands.MAX_CASES, commands.MAX_SEED, editors=EDITORS, limit=commands.MAX_CASES,
                                 gen_tokens=commands.MAX_GEN_TOKENS, model=model),
        ],
        "knowledge_argv": [
            commands.knowledge_argv("tiny32", case_sets=SETS),
            commands.knowledge_argv("other", case_sets=SETS, limit=commands.MAX_CASES, types="all", gen_tokens=1,
                                model=model),
        ],
        "sequential_argv": [
            commands.sequential_argv("ROME", "tiny32", 1, editors=EDITORS, case_sets=SETS),
            commands.sequential_argv("MEMIT", "other", commands.MAX_EDITS, commands.MAX_BATCH, commands.MAX_SEED, editors=EDITORS,
                                 case_sets=SETS, model=model),
        ],
        "batch_argv": [
            commands.batch_argv("MEMIT", "tiny32", "1", editors=EDITORS, case_sets=SETS),
            commands.batch_argv("AlphaEdit", "other", ",".join(str(commands.MAX_BATCH - i) for i in range(commands.MAX_BATCH_SIZES)),
                            commands.MAX_SEED, editors=EDITORS, case_sets=SETS, abilities=True, model=model),
        ],
        "sweep_argv": [
            commands.sweep_argv("ROME", "0", 1, editors=EDITORS),
            commands.sweep_argv("FT-L", ",".join(map(str, range(commands.MAX_SWEEP_VALUES))), commands.MAX_CASES, commands.MAX_SEED,
                            editors=EDITORS, limit=commands.MAX_CASES, gen_tokens=commands.MAX_GEN_TOKENS, model=model),
        ],
    }


def test_every_argv_builder_of_the_dashboard_is_covered(model_dir):
    made = {name for module in (commands, jobs) for name, fn in inspect.getmembers(module, inspect.isfunction)
            if name.endswith("_argv") and fn.__module__ == module.__name__}
    assert made == set(builders(model_dir))


@pytest.mark.parametrize("builder", ["edit_argv", "robustness_argv", "knowledge_argv", "sequential_argv",
                                     "batch_argv", "sweep_argv"])
def test_the_cli_parses_every_command_the_dashboard_builds(builder, model_dir):
    expected = {"edit_argv": cli.cmd_edit, "robustness_argv": cli.cmd_run_robustness,
                "knowledge_argv": cli.cmd_knowledge_measure, "sequential_argv": cli.cmd_run_sequential,
                "batch_argv": cli.cmd_run_batch, "sweep_argv": cli.cmd_run_sweep}[builder]
    for argv in builders(model_dir)[builder]:
        args = parse(argv)
        assert args.func is expected
        assert args.store == Path("/tmp/workspace.sqlite") and args.quiet
        given = dict(zip(argv, argv[1:]))
        assert args.model == given.get("--model", cli.build_parser().parse_args(
            ["run", "robustness", "--editor", "ROME"]).model)
        if "--editor" in given:
            assert args.editor == given["--editor"]
        if "--gen-tokens" in given:
            assert args.gen_tokens == int(given["--gen-tokens"])


def test_the_dashboards_limits_fit_inside_the_clis():
    assert commands.MAX_TEXT <= cli.MAX_TEXT
    assert commands.DEFAULT_MODEL == cli.build_parser().parse_args(["model", "info"]).model
    assert commands.LAUNCH_PANEL_SIZE <= commands.LAUNCH_PANEL_POOL


def test_a_demo_edit_reaches_the_cli_with_its_text_intact():
    argv = commands.edit_argv("  Côte d'Ivoire ", "capital", "São Paulo", "Yamoussoukro", "ROME", templates=TEMPLATES,
                          editors=EDITORS)
    args = parse(argv)
    assert (args.subject, args.relation, args.new, args.true) == ("Côte d'Ivoire", "capital", "São Paulo",
                                                                  "Yamoussoukro")


def test_the_test_notices_a_command_the_cli_refuses():
    """The check itself can fail: an argv with a value the CLI refuses is reported, not passed."""
    with pytest.raises(pytest.fail.Exception, match="refuses the dashboard's command"):
        parse(["knowledge", "measure", "--set", "tiny32", "--limit", "0"])
