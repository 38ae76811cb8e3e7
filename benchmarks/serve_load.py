"""Load test of ``popsim serve``: concurrent clients vs one-at-a-time, on the packaged SmolLM2.

Two workloads, each what a popsim client sends:

* ``score`` (the headline; option scoring) - each request is one agent's answer to one question: the
  agent's prompt (instruction, persona, earlier answers: ~130 tokens, the same for all of that agent's
  12 questions) plus the question (~25 tokens), scored against its 3 options with ``echo``,
  ``max_tokens=0`` and the ``popsim`` extension, as the ``openai`` backend sends it. Requests arrive in
  population order (an agent's questions one after another, as several simulation workers sharing one
  server would send them). Batching genuinely helps here: the micro-batcher puts concurrent requests
  into one ``token_logprobs`` call whose prefix tree encodes each agent's shared prompt once for all
  its questions in the batch, while a request sent alone pays for its whole prompt (the transformers
  backend keeps no KV cache between calls; vLLM's prefix caching would make the baseline cheaper);
* ``generate`` - short generation: a ~40-token prompt, 16 new tokens at temperature 0.8 with the
  request's own seed. On a CPU the gain is smaller: a SmolLM2 token costs ~0.3 GFLOP, so beyond the
  per-step overhead that batching removes, prefill and decoding stay compute-bound.

On one server subprocess bound to loopback, ``--rounds`` rounds each run, per workload, one client
sending requests one at a time and then ``--clients`` concurrent clients (phases bounded by request
count and ``--seconds``); a round's speedup is concurrent requests/s over one-at-a-time requests/s, and
the figure is the median over rounds (interleaving keeps drifting machine load from favouring a side).
The server's RSS (``/proc/PID/status``) is read after warm-up and after all the load, to show it stays
bounded; ``errors`` counts non-200 answers and transport errors (the script exits 1 if there are any).

The last line is::

    RESULT server_batching_speedup=X rps=Y p50_ms=A p95_ms=B seq_rps=Z generate_batching_speedup=G
           rss_before_mb=M rss_after_mb=N errors=E

(``server_batching_speedup``, ``rps``, ``p50_ms``, ``p95_ms``, ``seq_rps`` are the score workload's;
latencies are the concurrent phases', which include queueing behind the batch in progress.)

Usage::

    python benchmarks/serve_load.py --threads 1   # ~3 min on 2 quiet CPU cores
    python benchmarks/serve_load.py --quick
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

import httpx

OPTIONS = [" too little", " about right", " too much"]
TOPICS = ["the environment", "welfare", "the military", "scientific research", "highways", "education",
          "health", "foreign aid", "space exploration", "mass transportation", "parks", "social security"]
INSTRUCTION = "You embody the persona in the description to complete the task."


QUESTIONS_PER_AGENT = len(TOPICS)


def agent_prompt(agent: int, question: int) -> str:
    """A survey transcript prompt like popsim builds: the agent's shared part, then the question."""
    persona = (f"You are respondent {agent}, {30 + agent % 40} years old, from region {agent % 9}. You read the "
               f"news daily, you care about your town's budget, and you answer surveys carefully and briefly.")
    earlier = "\n".join(f"Q: Are we spending too much, too little, or about the right amount on {t}?\nA: "
                        f"{OPTIONS[(agent + k) % 3].strip()}" for k, t in enumerate(("crime", "drug addiction",
                                                                                       "big cities")))
    return (f"{INSTRUCTION}\n\n{persona}\n\nEarlier in this survey you answered:\n{earlier}\n\n"
            f"Q: Are we spending too much, too little, or about the right amount on {TOPICS[question]}?\nA:")


def score_body(i: int) -> dict:
    prompt = agent_prompt(i // QUESTIONS_PER_AGENT, i % QUESTIONS_PER_AGENT)
    return {"prompt": [prompt + o for o in OPTIONS], "max_tokens": 0, "echo": True, "logprobs": 0,
            "popsim": {"continuation_start": [len(prompt)] * 3, "temperatures": [0.8] * 3}}


def generate_body(i: int) -> dict:
    topic = TOPICS[i % len(TOPICS)]
    prompt = (f"You are respondent {i}, {30 + i % 40} years old. In one short sentence, say whether we spend too "
              f"much, too little, or about the right amount on {topic}, and why.\nAnswer:")
    return {"prompt": prompt, "max_tokens": 16, "temperature": 0.8, "seed": i}


WORKLOADS = {"score": score_body, "generate": generate_body}


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of ``pid`` in MiB."""
    fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status").read().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Load:
    """Counts requests, latencies and errors across client threads."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0
        self.lock = threading.Lock()
        self.next = 0

    def take(self, limit: int) -> int | None:
        with self.lock:
            if self.next >= limit:
                return None
            self.next += 1
            return self.next


def run_phase(url: str, body, *, clients: int, requests: int, seconds: float, offset: int) -> tuple[float, Load]:
    """``clients`` threads send requests until ``requests`` are done or ``seconds`` pass; returns (req/s, load)."""
    load = Load()
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        with httpx.Client(timeout=120) as client:
            while time.perf_counter() < deadline and (i := load.take(requests)) is not None:
                t = time.perf_counter()
                try:
                    ok = client.post(url, json=body(offset + i)).status_code == 200
                except httpx.HTTPError:
                    ok = False
                with load.lock:
                    load.latencies.append(time.perf_counter() - t)
                    load.errors += not ok

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(load.latencies) / (time.perf_counter() - start), load


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000 if len(values) > 1 else values[0] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lm", default="smollm2-135m-instruct")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--clients", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved (one-at-a-time, concurrent) rounds")
    parser.add_argument("--requests", type=int, default=72, help="requests per concurrent phase")
    parser.add_argument("--seq-requests", type=int, default=6, help="requests per one-at-a-time phase")
    parser.add_argument("--seconds", type=float, default=60.0, help="time cap per phase")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--threads", type=int, help="torch CPU threads in the server (OMP_NUM_THREADS); 1 is far "
                        "less sensitive to other processes competing for the cores")
    parser.add_argument("--quick", action="store_true", help="two rounds, smaller phases")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.requests, args.seq_requests = 2, 48, 4
    port = free_port()
    cmd = [sys.executable, "-m", "popsim", "serve", "--lm", args.lm, "--dtype", args.dtype, "--port", str(port),
           "--max-batch", str(args.max_batch)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "POPSIM_API_KEY": "",
                                   **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})})
    base = f"http://127.0.0.1:{port}"
    results: dict[str, dict[str, list]] = {name: {"ratio": [], "seq": [], "conc": [], "lat": [], "seq_lat": []}
                                           for name in WORKLOADS}
    errors = 0
    try:
        deadline = time.time() + 300
        while True:
            if server.poll() is not None or time.time() > deadline:
                print(server.stderr.read() if server.poll() is not None else "server did not start", file=sys.stderr)
                return 1
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        url = base + "/v1/completions"
        print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; server threads: "
              f"{args.threads or 'torch default'}")
        for body in WORKLOADS.values():  # warm-up: caches, allocator, both code paths
            run_phase(url, body, clients=8, requests=16, seconds=120, offset=100_000)
        rss_before, _ = rss_mb(server.pid)
        offset = 0
        for round_ in range(args.rounds):  # interleaved, so drifting machine load hits both sides alike
            for name, body in WORKLOADS.items():
                seq, load1 = run_phase(url, body, clients=1, requests=args.seq_requests, seconds=args.seconds,
                                       offset=offset)
                conc, load = run_phase(url, body, clients=args.clients, requests=args.requests,
                                       seconds=args.seconds, offset=offset + 1000)
                offset += 10_000
                r = results[name]
                r["ratio"].append(conc / seq)
                r["seq"].append(seq)
                r["conc"].append(conc)
                r["lat"] += load.latencies
                r["seq_lat"] += load1.latencies
                errors += load.errors + load1.errors
                print(f"round {round_ + 1} {name:8s}: one at a time {seq:5.2f} req/s, {args.clients} clients "
                      f"{conc:5.2f} req/s ({len(load.latencies)} requests) -> {conc / seq:.2f}x", flush=True)
        rss_after, rss_peak = rss_mb(server.pid)
        health = httpx.get(base + "/health", timeout=5).json()
    finally:
        server.terminate()
        server.wait(30)
    for name, r in results.items():
        print(f"{name:8s}: speedup median {statistics.median(r['ratio']):.2f}x (rounds: "
              f"{', '.join(f'{x:.2f}' for x in r['ratio'])}); concurrent p50 {pct(r['lat'], 50):.0f} ms, "
              f"p95 {pct(r['lat'], 95):.0f} ms; one-at-a-time p50 {pct(r['seq_lat'], 50):.0f} ms")
    print(f"server: {health['lm_calls']} LM calls for {health['rows']} rows (mean batch "
          f"{health['rows'] / max(health['lm_calls'], 1):.1f}); RSS {rss_before:.0f} MiB after warm-up, "
          f"{rss_after:.0f} MiB after load (peak {rss_peak:.0f} MiB)")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    sc, g = results["score"], results["generate"]
    print(f"RESULT server_batching_speedup={statistics.median(sc['ratio']):.2f} "
          f"rps={statistics.median(sc['conc']):.2f} p50_ms={pct(sc['lat'], 50):.0f} p95_ms={pct(sc['lat'], 95):.0f} "
          f"seq_rps={statistics.median(sc['seq']):.2f} generate_batching_speedup={statistics.median(g['ratio']):.2f} "
          f"rss_before_mb={rss_before:.0f} rss_after_mb={rss_after:.0f} errors={errors}")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
