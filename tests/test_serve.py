"""``popsim serve`` + the openai backend: a real server subprocess on loopback, compared with in-process.

The tiny random Llama (SmolLM2's tokenizer) keeps most tests fast; one test runs the packaged SmolLM2.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pandas as pd
import pytest
import torch

from popsim import runner
from popsim.config import load_scenario
from popsim.exceptions import AuthenticationError, CapabilityError, EndpointUnreachableError, EndpointURLError
from popsim.lm import Chat, load_lm
from popsim.lm.base import row_seeds
from popsim.lm.openai_backend import OpenAILanguageModel, parse_openai_name
from popsim.lm.remote import continuation_logprob, tempered_logprob

from .helpers import KEY, Server, free_port, small_survey

PROMPTS = [
    "Q: Should the government spend more on roads?\nA:",
    "The capital of France is",
    Chat.of("Describe your favourite film in one sentence."),
    "I like to eat",
]
CONTS = [" too little", " Paris", " It is a thriller.", " apples and bananas"]
OPTIONS = [[" too little", " about right", " too much"], [" Paris", " London"], [" Yes", " No"],
           [" apples", " rocks", " bread"]]


def _post(server: Server, path: str, body, *, key: str | None = KEY, raw: bytes | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if raw is not None:
        headers["Content-Type"] = "application/json"
        return httpx.post(server.url + path, content=raw, headers=headers, timeout=60)
    return httpx.post(server.url + path, json=body, headers=headers, timeout=60)


# ---------------------------------------------------------------------------------------------- equality
def test_score_and_options_match_in_process(client, tiny_lm):
    assert client.is_popsim and client.name == tiny_lm.name
    for tau in (1.0, [0.6, 1.3, 0.9, 1.0]):
        remote = client.score(PROMPTS, CONTS, temperature=tau)
        local = tiny_lm.score(PROMPTS, CONTS, temperature=tau)
        assert torch.allclose(remote, local, atol=1e-3), (remote, local)
    remote_opts = client.option_logprobs(PROMPTS, OPTIONS, temperature=[0.7, 1.0, 1.5, 0.9])
    local_opts = tiny_lm.option_logprobs(PROMPTS, OPTIONS, temperature=[0.7, 1.0, 1.5, 0.9])
    for r, lo in zip(remote_opts, local_opts):
        assert np.allclose(np.exp(r), np.exp(lo), atol=1e-3)
    assert client.render(PROMPTS[2]) == tiny_lm.render(PROMPTS[2])


def test_generate_matches_in_process_with_seeds(client, tiny_lm):
    for seed in ([11, 22, 33, 44], 5):
        remote = client.generate(PROMPTS, max_new_tokens=10, temperature=[0.9, 1.0, 0.7, 1.2], seed=seed)
        assert remote == tiny_lm.generate(PROMPTS, max_new_tokens=10, temperature=[0.9, 1.0, 0.7, 1.2], seed=seed)
    greedy = client.generate(PROMPTS[:2], max_new_tokens=8, temperature=0.0, stop=("\n",))
    assert greedy == tiny_lm.generate(PROMPTS[:2], max_new_tokens=8, temperature=0.0, stop=("\n",))


def test_standard_echo_logprobs_sum_to_in_process_score(server, tiny_lm):
    """The OpenAI legacy path (no popsim extension): the client sums the tail tokens by text_offset."""
    prompt, cont = PROMPTS[0], CONTS[0]
    body = {"prompt": [prompt + cont], "max_tokens": 0, "echo": True, "logprobs": 3}
    out = _post(server, "/completions", body).json()["choices"][0]
    lp = out["logprobs"]
    assert out["text"] == prompt + cont and "".join(lp["tokens"]) == prompt + cont
    assert lp["token_logprobs"][0] is None and all(v is not None for v in lp["token_logprobs"][1:])
    assert all(len(t) <= 3 for t in lp["top_logprobs"][1:]) and lp["text_offset"] == sorted(lp["text_offset"])
    summed = continuation_logprob(lp, prompt_len=len(prompt), full_text=prompt + cont)
    assert abs(summed - float(tiny_lm.score([prompt], [cont])[0])) < 1e-3


def test_generic_server_path_scores_at_tau_one_and_approximates_otherwise(server, tiny_lm):
    generic = OpenAILanguageModel(server.url, api_key=KEY, top_logprobs=5)
    generic.is_popsim = False  # behave as against vLLM/OpenAI: standard echo only
    plain = [p for p in PROMPTS if isinstance(p, str)]
    conts = [c for p, c in zip(PROMPTS, CONTS) if isinstance(p, str)]
    assert torch.allclose(generic.score(plain, conts), tiny_lm.score(plain, conts), atol=1e-3)
    with pytest.warns(UserWarning, match="approximated"):
        approx = generic.score(plain, conts, temperature=0.8)
    # tau reaches the approximation (the same HTTP path at tau 1 gives other values; a top-5 view of this
    # near-uniform random model moves them little, test_tempered_logprob_* checks the formula itself)
    assert torch.isfinite(approx).all() and not torch.equal(approx, generic.score(plain, conts))
    with pytest.raises(CapabilityError, match="chat prompts cannot be scored"):
        generic.score(PROMPTS, CONTS)
    generic.close()


def test_tempered_logprob_is_exact_with_the_whole_vocabulary():
    logits = torch.randn(50, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    lp = logits.log_softmax(0).tolist()
    exact = (logits / 0.7).log_softmax(0)[3].item()
    assert abs(tempered_logprob(lp[3], lp[:3] + lp[4:], 0.7) - exact) < 1e-9
    assert tempered_logprob(lp[3], [], 1.0) == lp[3]


def test_concurrent_requests_are_batched(server, client):
    before = server.health()
    results = [None] * 12

    def one(i: int) -> None:
        results[i] = client.score([PROMPTS[0]], [f" option {i}"])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = server.health()
    rows, calls = after["rows"] - before["rows"], after["lm_calls"] - before["lm_calls"]
    assert rows == 12 and calls < 12, (rows, calls)
    assert all(r is not None for r in results)


def test_any_language_model_can_be_served_for_generation():
    """In-process app over the HashLM double: generation works; logprobs are refused with a 4xx."""
    from fastapi.testclient import TestClient

    from popsim.lm.testing import HashLM
    from popsim.serve import create_app

    lm = HashLM()
    with TestClient(create_app(lm, window_ms=1.0)) as http:
        out = http.post("/v1/completions", json={"prompt": ["a", "b"], "max_tokens": 6, "seed": 4})
        assert out.status_code == 200
        assert [c["text"] for c in out.json()["choices"]] == lm.generate(["a", "b"], max_new_tokens=6,
                                                                        seed=row_seeds(4, 2))
        refused = http.post("/v1/completions", json={"prompt": "a", "max_tokens": 0, "echo": True, "logprobs": 1})
        assert refused.status_code == 400 and "logprobs" in refused.json()["error"]["message"]
        assert http.get("/v1/models").json()["data"][0]["popsim"]["echo_scoring"] is False


# ---------------------------------------------------------------------------------------------- errors
def test_bad_url_unreachable_and_wrong_key_are_clear(server):
    with pytest.raises(EndpointURLError, match="no valid endpoint URL"):
        load_lm("openai:not-a-url")
    with pytest.raises(EndpointURLError):
        parse_openai_name("openai:http://127.0.0.1:99999/v1")
    assert parse_openai_name("openai:my-model@http://h:1/v1") == ("my-model", "http://h:1/v1")
    with pytest.raises(EndpointUnreachableError, match="cannot reach .* start the server"):
        load_lm(f"openai:http://127.0.0.1:{free_port()}/v1", max_retries=1, device="cpu", dtype="fp32")
    with pytest.raises(AuthenticationError, match="401"):
        OpenAILanguageModel(server.url, api_key="wrong-key")
    assert _post(server, "/completions", {"prompt": "x"}, key=None).status_code == 401


def test_vllm_backend_imports_and_says_what_it_needs():
    import popsim.lm.vllm_backend as vb

    assert vb.VLLMLanguageModel.__doc__
    with pytest.raises(CapabilityError, match="vllm"):
        load_lm("vllm:HuggingFaceTB/SmolLM2-135M-Instruct")


MALFORMED = [
    ("/completions", None, b"{not json"),
    ("/completions", None, b"[1, 2]"),
    ("/completions", {"max_tokens": 4}, None),
    ("/completions", {"prompt": "hi", "max_tokens": -1}, None),
    ("/completions", {"prompt": "hi", "max_tokens": 100000}, None),
    ("/completions", {"prompt": [1, 2, 3]}, None),
    ("/completions", {"prompt": []}, None),
    ("/completions", {"prompt": ["hi"] * 300}, None),
    ("/completions", {"prompt": "hi", "logprobs": 1000, "echo": True, "max_tokens": 0}, None),
    ("/completions", {"prompt": "hi", "max_tokens": 0}, None),
    ("/completions", {"prompt": "hi", "n": 3}, None),
    ("/completions", {"prompt": "hi", "stream": True}, None),
    ("/completions", {"prompt": "hi", "temperature": -1}, None),
    ("/completions", {"prompt": "hi", "model": "gpt-nonexistent"}, None),
    ("/completions", {"prompt": "word " * 9000, "max_tokens": 1}, None),
    ("/completions", {"prompt": "hi", "echo": True, "max_tokens": 0, "popsim": {"continuation_start": [9]}}, None),
    ("/completions", {"prompt": ["a", "b"], "popsim": {"seeds": [1]}}, None),
    ("/completions", {"prompt": "hi", "popsim": {"bogus": 1}}, None),
    ("/chat/completions", {"messages": []}, None),
    ("/chat/completions", {"messages": [{"role": "robot", "content": "hi"}]}, None),
    ("/chat/completions", {"messages": [{"role": "user", "content": 5}]}, None),
    ("/popsim/render", {"chats": "x"}, None),
]


@pytest.mark.parametrize("path,body,raw", MALFORMED)
def test_malformed_requests_get_4xx_json(server, path, body, raw):
    response = _post(server, path, body, raw=raw)
    assert 400 <= response.status_code < 500, response.text
    assert "message" in response.json()["error"]


def test_too_large_body_and_unknown_routes(server):
    huge = json.dumps({"prompt": "x" * (5 * 1024 * 1024)}).encode()
    assert _post(server, "/completions", None, raw=huge).status_code == 413
    assert httpx.get(server.url + "/nowhere").status_code == 404
    assert httpx.get(server.url + "/completions").status_code == 405
    assert server.health()["status"] == "ok"


# ---------------------------------------------------------------------------------------------- runs
def _responses_match(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a["answer"]) == list(b["answer"])
    assert list(a["agent"]) == list(b["agent"]) and list(a["question"]) == list(b["question"])
    for pa, pb in zip(a["probs"], b["probs"]):
        da, db = json.loads(pa), json.loads(pb)
        assert da.keys() == db.keys() and all(abs(da[k] - db[k]) < 1e-3 for k in da)


AGENTS = 40  # in chunks of 4: ten parts, so a run can be stopped part-way


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_lm, tiny_lm_dir, encoder):
    """The small survey fitted and simulated in-process on the tiny model (MoP fitted on the open model)."""
    folder = tmp_path_factory.mktemp("reference")
    scenario = load_scenario(small_survey(folder, lm=str(tiny_lm_dir), agents=AGENTS))
    return runner.run(scenario, lm=tiny_lm, encoder=encoder, verbose=False)


def test_survey_through_server_equals_in_process(tmp_path, server, client, reference, tiny_lm, tiny_lm_dir, encoder):
    """A fitted MoP gate (open model, in-process) samples through the HTTP backend: same answers. As
    docs/scale-out.md says: fit in process into the folder, then run there with `--lm openai:URL` (the fit is
    reused whatever its LM)."""
    path = small_survey(tmp_path / "remote", lm=str(tiny_lm_dir), agents=AGENTS)
    local = load_scenario(path)
    runner.fit_model(local, tiny_lm, encoder, local.run_dir, verbose=False)
    scenario = load_scenario(path, {"lm.name": f"openai:{server.url}"})
    assert scenario.run_dir == local.run_dir
    remote = runner.run(scenario, lm=client, encoder=encoder, verbose=False)
    _responses_match(remote.responses, reference.responses)


def test_server_killed_mid_run_stops_cleanly_and_resumes(tmp_path, tiny_lm_dir, reference):
    srv = Server(str(tiny_lm_dir), extra=("--batch-window-ms", "250")).start()
    path = small_survey(tmp_path / "killed", lm=f"openai:{srv.url}", agents=AGENTS)
    run_dir = tmp_path / "killed" / "run"
    shutil.copytree(reference.run_dir / "mop", run_dir / "mop")
    env = {**os.environ, "POPSIM_API_KEY": KEY}
    cmd = [sys.executable, "-m", "popsim", "run", str(path), "--quiet"]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        parts = run_dir / "parts"
        deadline = time.time() + 120
        while time.time() < deadline and len(list(parts.glob("part-*.parquet"))) < 2:
            time.sleep(0.02)
        srv.stop(signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
        kept = len(list(parts.glob("part-*.parquet")))
        assert proc.returncode == 2, err
        errors = [line for line in err.splitlines() if line.startswith("popsim: error:")]
        assert len(errors) == 1 and "cannot reach" in errors[0] and "Traceback" not in err, err
        assert 2 <= kept < AGENTS // 4  # some parts written, not all
        srv.start()
        again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert again.returncode == 0, again.stderr
    finally:
        srv.stop()
    _responses_match(pd.read_parquet(run_dir / "responses.parquet"), reference.responses)


def test_real_smollm2_through_server(smollm):
    """The packaged SmolLM2 (fp32) served over HTTP scores and generates as it does in-process."""
    srv = Server("smollm2-135m-instruct", api_key=None).start()
    try:
        lm = OpenAILanguageModel(srv.url, api_key="")
        assert lm.name == smollm.name
        remote = lm.option_logprobs(PROMPTS, OPTIONS, temperature=[0.8, 1.0, 1.2, 1.0])
        local = smollm.option_logprobs(PROMPTS, OPTIONS, temperature=[0.8, 1.0, 1.2, 1.0])
        for r, lo in zip(remote, local):
            assert np.allclose(np.exp(r), np.exp(lo), atol=1e-3)
        assert lm.generate(PROMPTS[:3], max_new_tokens=8, temperature=0.7, seed=3) == \
            smollm.generate(PROMPTS[:3], max_new_tokens=8, temperature=0.7, seed=3)
        lm.close()
    finally:
        srv.stop()


def test_the_micro_batcher_never_leaves_a_request_waiting_when_the_lm_miscounts():
    """A backend that returns the wrong number of results (a bug) fails those requests, or recovers them one
    by one, and the batcher keeps serving; before, the mismatch killed its loop and every later request hung."""
    import asyncio

    from popsim.serve.batcher import MicroBatcher

    def short_when_batched(key, items):  # one result too few for any batch of two or more
        return [item * 2 for item in items][: max(len(items) - 1, 1)]

    def always_short(key, items):
        return []

    async def scenario():
        recovering = MicroBatcher(short_when_batched, window_s=0.05)
        recovering.start()
        doubled = await asyncio.wait_for(recovering.submit_many("k", [1, 2, 3]), 5)
        await recovering.stop()
        failing = MicroBatcher(always_short, window_s=0.01)
        failing.start()
        with pytest.raises(RuntimeError, match="returned 0 results for 1 rows"):
            await asyncio.wait_for(failing.submit("k", 1), 5)
        with pytest.raises(RuntimeError):  # the loop is still alive: the next request is answered too
            await asyncio.wait_for(failing.submit("k", 2), 5)
        await failing.stop()
        return doubled

    assert asyncio.run(scenario()) == [2, 4, 6]
