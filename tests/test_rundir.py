"""The run folder's one owner: part names and bytes as before, resume, fit key, checks, unreadable parts."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import pandas as pd
import pytest

from popsim import runner
from popsim.config import load_scenario
from popsim.exceptions import RunDirectoryError
from popsim.rundir import PartWriter, RunDirectory

from .helpers import local_survey

ROWS = [{"agent": 0, "round": 1, "question": "q1", "answer": "more", "probs": {"more": 0.7, "less": 0.3},
         "persona": 1, "exemplar": 2, "temperature": 0.8},
        {"agent": 1, "round": 1, "question": "review", "answer": "Great film.", "probs": None, "persona": 0,
         "exemplar": 1, "temperature": 1.1}]


def legacy_part_bytes(rows: list[dict]) -> bytes:
    """What the runner's own flush wrote before the run folder had one owner (the format old folders hold)."""
    frame = pd.DataFrame(rows)
    frame["probs"] = [None if p is None else json.dumps(p) for p in frame["probs"]]
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def test_parts_keep_their_names_and_bytes_and_resume_reads_them(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    plain, shard = run.part_writer(), run.part_writer(shard=1)
    assert plain(ROWS).name == "part-000000.parquet" and plain(ROWS).name == "part-000001.parquet"
    assert shard(ROWS).name == "part-w001-000000.parquet"
    assert (run.parts_dir / "part-000000.parquet").read_bytes() == legacy_part_bytes(ROWS)
    done = run.completed()
    assert done == {(0, 1, "q1"): ("more", {"more": 0.7, "less": 0.3}), (1, 1, "review"): ("Great film.", None)}
    assert len(run.load_parts()) == 3 * len(ROWS)  # duplicates are the runner's to drop


def test_part_numbers_are_never_reused(tmp_path: Path) -> None:
    parts = tmp_path / "parts"
    parts.mkdir()
    for name in ("part-000004.parquet", "part-000007.parquet.corrupt", "part-w000-000002.parquet",
                 "part-w001-000009.parquet"):
        (parts / name).touch()
    assert PartWriter(parts).next == 8  # after the highest, a set-aside one included
    assert PartWriter(parts, shard=0).next == 3 and PartWriter(parts, shard=1).next == 10
    assert PartWriter(parts, shard=2).next == 0


def test_an_unreadable_part_is_set_aside_with_a_warning_naming_it(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    run.part_writer()(ROWS)
    (run.parts_dir / "part-000001.parquet").write_bytes(b"not parquet at all")
    pd.DataFrame({"agent": [0]}).to_parquet(run.parts_dir / "part-000002.parquet")  # readable, not a part
    with pytest.warns(UserWarning, match=r"part-000001\.parquet is unreadable.*will be recomputed") as caught:
        parts = run.load_parts()
    assert any("part-000002.parquet" in str(w.message) and "'round'" in str(w.message) for w in caught)
    assert len(parts) == len(ROWS)
    assert sorted(p.name for p in run.parts_dir.iterdir()) == [
        "part-000000.parquet", "part-000001.parquet.corrupt", "part-000002.parquet.corrupt"]
    assert run.part_writer().next == 3  # the set-aside names stay taken


def test_fit_key_is_removed_before_the_model_is_replaced(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    assert run.stored_fit_key() is None and not run.has_fit("abc")

    def save(folder: Path) -> None:
        assert not (folder / "fit_key").exists()  # a crash here leaves no key: the model is refitted
        folder.mkdir(exist_ok=True)
        (folder / "mop.json").write_text("{}")

    run.write_fit(save, "abc")
    assert run.has_fit("abc") and not run.has_fit("abd")
    run.write_fit(save, "abd")
    assert run.stored_fit_key() == "abd"


def test_check_refuses_foreign_folders_other_configs_and_corrupt_manifests(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path / "run")
    assert run.check("h1") == run.path and not run.path.exists()  # writes nothing
    run.prepare("h1")
    run.write_manifest(config_hash="h1", status="running")
    run.write_manifest(status="complete")
    assert run.manifest() == {"config_hash": "h1", "status": "complete"}
    run.check("h1")
    with pytest.raises(RunDirectoryError, match="different config"):
        run.check("h2")
    run.manifest_path.write_text("[1, 2]")
    with pytest.raises(RunDirectoryError, match=r"manifest.json is corrupt.*delete it"):
        run.check("h1")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.docx").touch()
    with pytest.raises(RunDirectoryError, match="thesis.docx"):
        RunDirectory(tmp_path / "mine").check("h1")


def test_prepare_sweeps_the_temporary_files_of_a_killed_write(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    run.part_writer()(ROWS)
    left = [run.parts_dir / ".part-000001.parquet.x1y2.tmp", tmp_path / ".manifest.json.ab.tmp"]
    for path in left:
        path.write_bytes(b"half")
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / ".index.html.cd.tmp").write_bytes(b"being written by `popsim report`")
    run.prepare("h1")
    assert not any(p.exists() for p in left)
    assert (tmp_path / "report" / ".index.html.cd.tmp").exists()
    assert (run.parts_dir / "part-000000.parquet").exists()


def test_a_resumed_run_recomputes_a_garbled_part_and_says_so(tmp_path: Path) -> None:
    """Before the run folder had one owner, a garbled part was deleted without a word."""
    reference = runner.run(load_scenario(local_survey(tmp_path / "ref")), verbose=False)
    scenario = load_scenario(local_survey(tmp_path / "resumed"))
    runner.run(scenario, verbose=False)
    parts = scenario.run_dir / "parts"
    assert len(list(parts.glob("part-*.parquet"))) == 3
    (scenario.run_dir / "responses.parquet").unlink()
    garbled = parts / "part-000001.parquet"
    garbled.write_bytes(garbled.read_bytes()[:40])  # torn by a disk fault, say
    with pytest.warns(UserWarning, match=r"part-000001\.parquet is unreadable.*recomputed"):
        result = runner.run(scenario, verbose=False)
    pd.testing.assert_frame_equal(result.responses, reference.responses)
    assert (parts / "part-000001.parquet.corrupt").exists()
    assert sorted(p.name for p in parts.glob("part-*.parquet")) == [
        "part-000000.parquet", "part-000002.parquet", "part-000003.parquet"]  # only the lost chunk redone
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = runner.run(scenario, verbose=False)
    assert not [w for w in caught if "unreadable" in str(w.message)]  # a clean folder resumes silently
    pd.testing.assert_frame_equal(again.responses, reference.responses)
