"""Ray sharding: the same responses.parquet as one process, networks across shards, resume, errors."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pandas as pd
import pytest

from popsim import runner
from popsim.config import load_scenario
from popsim.exceptions import PopsimError
from popsim.sim.distributed import plan_shards, worker_env

from .helpers import small_survey

AGENTS = 10  # chunk_agents is 4 in small_survey: three chunks, the last one partial


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray instance with two CPUs, shared by this module's tests."""
    ray = pytest.importorskip("ray", reason="ray is not installed; `pip install -e '.[dev]'` installs it")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, encoder):
    """The single-process run every Ray run must reproduce."""
    path = small_survey(tmp_path_factory.mktemp("one"), agents=AGENTS)
    return runner.run(load_scenario(path), encoder=encoder, verbose=False)


def _responses(run_dir) -> pd.DataFrame:
    frame = pd.read_parquet(run_dir / "responses.parquet")
    return frame.sort_values(["agent", "round", "question"]).reset_index(drop=True)


def test_plan_shards_deals_whole_chunks_round_robin():
    shards = plan_shards(10, 4, 2)
    assert shards == [[0, 1, 2, 3, 8, 9], [4, 5, 6, 7]]
    assert plan_shards(10, 4, 8) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]  # never more shards than chunks
    big = plan_shards(1001, 64, 3)
    assert sorted(a for s in big for a in s) == list(range(1001))


def test_missing_ray_is_a_one_line_error_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    scenario = load_scenario(small_survey(tmp_path))
    with pytest.raises(PopsimError, match=r"pip install 'popsim\[ray\]'"):
        runner.run(scenario, verbose=False, workers=2)
    assert not scenario.run_dir.exists()


def test_ray_run_gives_the_single_process_responses(tmp_path, ray_cluster, reference, encoder):
    run_dir = tmp_path / "run"
    shutil.copytree(reference.run_dir / "mop", run_dir / "mop")  # the fit is shared; the network test fits
    scenario = load_scenario(small_survey(tmp_path, agents=AGENTS))
    result = runner.run(scenario, encoder=encoder, verbose=False, workers=2)
    pd.testing.assert_frame_equal(_responses(result.run_dir), _responses(reference.run_dir))
    pd.testing.assert_frame_equal(pd.read_parquet(result.run_dir / "agents.parquet"),
                                  pd.read_parquet(reference.run_dir / "agents.parquet"))
    assert len(result.responses) == AGENTS * 4
    assert result.lm_calls == reference.lm_calls  # the very same LM batches, split over two workers
    assert {p.name[:9] for p in (run_dir / "parts").iterdir()} == {"part-w000", "part-w001"}


def test_ray_workers_draw_answers_with_the_learned_option_bias(tmp_path, ray_cluster, reference, encoder):
    learned = {"simulation__option_bias": "learned", "simulation__calibration_agents": 8}
    for name in ("one", "ray"):
        shutil.copytree(reference.run_dir / "mop", tmp_path / name / "run" / "mop")
    one = runner.run(load_scenario(small_survey(tmp_path / "one", agents=AGENTS, **learned)), encoder=encoder,
                     verbose=False)
    sharded = runner.run(load_scenario(small_survey(tmp_path / "ray", agents=AGENTS, **learned)), encoder=encoder,
                         verbose=False, workers=2)
    pd.testing.assert_frame_equal(_responses(sharded.run_dir), _responses(one.run_dir))
    assert (_responses(one.run_dir)["probs"] != _responses(reference.run_dir)["probs"]).all()  # shifted


def test_stopped_ray_run_resumes_with_or_without_ray(tmp_path, ray_cluster, reference, encoder):
    scenario = load_scenario(small_survey(tmp_path, agents=AGENTS))
    shutil.copytree(reference.run_dir / "mop", scenario.run_dir / "mop")
    runner.run(scenario, encoder=encoder, verbose=False, workers=2)
    parts = scenario.run_dir / "parts"
    assert sorted(p.name for p in parts.iterdir()) == [  # shard 0: chunks 0 and 2, shard 1: chunk 1
        "part-w000-000000.parquet", "part-w000-000001.parquet", "part-w001-000000.parquet"]
    for name in ("part-w000-000000.parquet", "part-w001-000000.parquet"):  # as if stopped mid-run
        (parts / name).unlink()
    runner.run(scenario, encoder=encoder, verbose=False)  # resume in one process
    pd.testing.assert_frame_equal(_responses(scenario.run_dir), _responses(reference.run_dir))
    plain = sorted(p.name for p in parts.glob("part-0*.parquet"))
    assert len(plain) == 2  # only the two lost chunks were redone
    for name in plain:
        (parts / name).unlink()
    result = runner.run(scenario, encoder=encoder, verbose=False, workers=1)  # and again on Ray, one worker
    pd.testing.assert_frame_equal(_responses(result.run_dir), _responses(reference.run_dir))
    # numbered on after the highest part left (a count of files would have overwritten part 1)
    assert sorted(p.name for p in parts.iterdir()) == [f"part-w000-{i:06d}.parquet" for i in (1, 2, 3)]


def test_network_rounds_see_neighbours_in_other_shards(tmp_path, ray_cluster, reference, encoder):
    net = {"simulation__network": {"kind": "small_world", "degree": 2, "rewire": 0.0}, "simulation__rounds": 2}
    shutil.copytree(reference.run_dir / "mop", tmp_path / "one" / "run" / "mop")  # same fit key
    one = runner.run(load_scenario(small_survey(tmp_path / "one", agents=12, **net)), encoder=encoder, verbose=False)
    # the driver fits afresh here: workers load what it saved, draws come from the model in its memory
    sharded = runner.run(load_scenario(small_survey(tmp_path / "ray", agents=12, **net)), encoder=encoder,
                         verbose=False, workers=2)
    # a ring: agent 3 (shard 0) neighbours agent 4 (shard 1), so round 2 needs the round-1 barrier
    pd.testing.assert_frame_equal(_responses(sharded.run_dir), _responses(one.run_dir))
    assert sorted(one.responses["round"].unique()) == [1, 2]


def test_worker_sees_the_drivers_cache_and_offline_settings(ray_cluster, monkeypatch, tmp_path):
    monkeypatch.setenv("POPSIM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    @ray_cluster.remote(runtime_env={"env_vars": worker_env()})
    def env() -> dict:
        import os

        return {k: os.environ.get(k) for k in ("POPSIM_CACHE_DIR", "HF_HUB_OFFLINE")}

    assert ray_cluster.get(env.remote()) == {"POPSIM_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}


def test_worker_failure_is_one_line_popsim_error(tmp_path, ray_cluster, reference, encoder):
    from popsim.lm.testing import HashLM

    scenario = load_scenario(small_survey(tmp_path, lm="no-such-model", agents=AGENTS))
    shutil.copytree(reference.run_dir / "mop", scenario.run_dir / "mop")  # the fit key does not include the LM
    with pytest.raises(PopsimError, match="lm 'no-such-model' is not a known name"):
        runner.run(scenario, lm=HashLM(), encoder=encoder, verbose=False, workers=2)  # the driver's LM is fine


def test_cli_ray_run_starts_its_own_ray(tmp_path, reference):
    pytest.importorskip("ray", reason="ray is not installed; `pip install -e '.[dev]'` installs it")
    path = small_survey(tmp_path, agents=AGENTS)
    shutil.copytree(reference.run_dir / "mop", tmp_path / "run" / "mop")
    cmd = [sys.executable, "-m", "popsim", "run", str(path), "--ray", "--workers", "2", "--quiet"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Outputs in" in out.stdout
    pd.testing.assert_frame_equal(_responses(tmp_path / "run"), _responses(reference.run_dir))
    bad = subprocess.run(cmd[:5] + ["--workers", "2"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "popsim: error: --workers needs --ray; add --ray to shard the population over Ray workers")


@pytest.mark.slow
def test_real_smollm_fp32_ray_run_matches_one_process(tmp_path, ray_cluster, smollm, encoder):
    """Each worker loads its own SmolLM2 replica (fp32) from the scenario; answers match one process.

    The silicon baseline (real profiles, no persona) needs no fit: this test is about the LM's numbers, the
    hash-LM tests above cover the MoP draws.
    """
    scenario = load_scenario(small_survey(tmp_path, lm="smollm2-135m-instruct", agents=8, lm__dtype="fp32",
                                          simulation__method="silicon"))
    one = runner.run(scenario, lm=smollm, encoder=encoder, verbose=False)
    expected = _responses(one.run_dir)
    assert expected["probs"].nunique() > 8  # real, varied option probabilities
    shutil.rmtree(scenario.run_dir / "parts")  # simulate again, on Ray
    sharded = runner.run(scenario, lm=smollm, encoder=encoder, verbose=False, workers=2)
    assert {p.name[:9] for p in (scenario.run_dir / "parts").iterdir()} == {"part-w000", "part-w001"}
    pd.testing.assert_frame_equal(_responses(sharded.run_dir), expected)
