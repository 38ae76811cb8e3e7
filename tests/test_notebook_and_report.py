"""The analysis notebook executes against a real (small) run, and `popsim report` on two runs renders in Chromium."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

import pytest

from popsim import runner
from popsim.config import load_scenario
from popsim.eval import BANNER

from .helpers import SURVEY_QUESTIONS, small_survey
from .test_report import browser_layout, screenshot

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("nbrun")
    return runner.run(load_scenario(small_survey(tmp, agents=40)), verbose=False).run_dir


@pytest.fixture(scope="module")
def uniform_run(tmp_path_factory) -> Path:
    """The same scenario answered by the uniform baseline: a second method for the report to set beside MoP."""
    tmp = tmp_path_factory.mktemp("nbrun-uniform")
    return runner.run(load_scenario(small_survey(tmp, agents=40, simulation__method="uniform")), verbose=False).run_dir


def test_notebook_executes(small_run, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("POPSIM_RUN_DIR", str(small_run))
    nb = nbformat.read(ROOT / "notebooks" / "subgroup_analysis.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("agents" in "".join(o.get("text", "")) for o in outputs)


def test_report_command_renders_in_chromium(small_run, uniform_run, tmp_path):
    """`popsim report RUN_A RUN_B`: summary first, a panel per question, tables in words, nothing past 1280 px."""
    out = subprocess.run([sys.executable, "-m", "popsim", "report", str(small_run), str(uniform_run), "--real",
                          str(small_run / "heldout.parquet"), "--out", str(tmp_path / "rep"), "--by", "race"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    page_path = tmp_path / "rep" / "report.html"
    page = page_path.read_text()
    assert BANNER in page and 'id="longtail-plot"' in page and "data:image/png;base64," in page
    assert page.index('id="summary"') < page.index('id="questions"') < page.index('id="longtail-plot"')
    headers = [html.unescape(h) for h in re.findall(r"<th[^>]*>(.*?)</th>", page)]
    assert "Overall TV (0-1, lower is better)" in headers
    assert not [h for h in headers if re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)+", h)], headers
    assert ">mop<" in page and ">uniform<" in page and "by race" in page
    layout = browser_layout(page_path, tmp_path)
    assert layout["scroll_width"] <= layout["viewport"] == 1280 and layout["wide"] == [], layout
    questions = sorted(q["id"] for q in SURVEY_QUESTIONS)
    assert sorted(p["question"] for p in layout["panels"]) == questions
    assert all(p["alt"] and p["width"] > 0 for p in layout["panels"])
    pixels = screenshot(page_path, tmp_path)
    assert pixels.shape[:2] == (900, 1280) and 255 * pixels.std() > 5


def test_report_says_when_it_cannot_be_built_instead_of_exiting_quietly(small_run, tmp_path, monkeypatch, capsys):
    """A broken plotting install used to end `popsim report` with status 0 and no report."""
    import popsim.eval.headline  # noqa: F401  (loaded before the report module goes missing)
    from popsim.cli import main

    monkeypatch.setitem(sys.modules, "popsim.eval.report", None)  # importing it now raises ImportError
    code = main(["report", str(small_run), "--out", str(tmp_path / "rep")])
    err = capsys.readouterr().err
    assert code != 0 and "report could not be built" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "rep" / "report.html").exists()


def test_report_checks_its_arguments_before_printing_anything(small_run, tmp_path, capsys):
    """An unknown --by attribute, or a bad second run directory, stops the command before any table prints."""
    from popsim.cli import main

    assert main(["report", str(small_run), "--by", "religion", "--out", str(tmp_path / "rep")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "--by must be one of the runs' attributes (party, race, sex); got 'religion'" in err
    assert main(["report", str(small_run), str(tmp_path / "missing"), "--out", str(tmp_path / "rep")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1


def test_report_on_a_truncated_heldout_file_is_one_line(small_run, tmp_path, capsys):
    import shutil

    from popsim.cli import main

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    (run / "heldout.parquet").write_bytes((small_run / "heldout.parquet").read_bytes()[:300])
    assert main(["report", str(run), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err.strip()
    assert "heldout.parquet cannot be read" in err and "--real" in err and len(err.splitlines()) == 1
