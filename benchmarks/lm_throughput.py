"""Throughput of popsim's transformers backend on the embedded SmolLM2-135M-Instruct.

What is measured, in one run (all on the device ``HFLanguageModel`` picks, normally the CPU):

* ``generate_speedup`` - 64 short chat prompts ("Write a one-sentence review of movie #i" and
  similar), ~20 new tokens each, sampled with one seed per row: one ``generate`` call per prompt
  versus one batched ``generate`` call for all of them. Ratio = per-prompt time / batched time.
* ``generate_tok_s`` / ``generate_roofline_fraction`` - decode near the hardware limit: SmolLM2 in
  bf16, 64 plain-text prompts of ~15 tokens with no prefix shared between them (each opens with its
  own first token), exactly 64 new tokens each (``ignore_eos``: no stop at end of text), temperature
  0.8, one seed per row; the whole ``generate`` call is timed (prompt encoding included). Tokens/s is
  64 x 64 over its time (median of ``--reps``); the fraction is the achieved FLOP/s over the bf16
  matmul reference below, measured right after each repetition (median of the per-repetition
  fractions), with ``2 x (parameters excluding the token embedding + vocab x hidden)`` FLOPs per new
  token (prompt tokens and attention scores are not counted). Both with the compiled decode step, after
  a call that compiled it; ``generate_eager_tok_s`` is the same call with eager steps, which is what a
  call this size gets by default (``HFLanguageModel(compile_decode_tokens=...)``: the compile, timed
  and printed, costs more than it saves below ~100k new tokens).
* ``generate_shared_prefix_speedup`` - the score workload's 64 prompts below (persona as system message, an
  exemplar review, a task: rows with the same persona and exemplar share ~100 leading tokens), 24 new tokens
  each, sampled: one ``generate`` call with ``prefix_sharing`` off (every prompt encoded in full) over one with
  it on (each shared prefix encoded once and copied into the other rows' cache slots). The same bf16 model,
  repetitions interleaved; also prints the share of prompt tokens sharing saves and how many texts agree.
* ``score_speedup`` - 64 (prompt, continuation) pairs, prompts of ~100 tokens (persona as system
  message + an exemplar review + a task) and ~20-token continuations: one ``score`` call per pair
  versus one batched ``score`` call. Ratio = per-pair time / batched time.
* ``score_vs_raw`` - the batched ``score`` call versus a plain ``lm.model(input_ids, attention_mask)``
  forward (full-vocabulary logits at every position, under ``torch.inference_mode``) over the same
  right-padded batch of prompt+continuation ids. Ratio = raw time / score time; above 1 means
  ``score`` (decoder body once, vocabulary projection only at continuation positions) beats the
  naive forward, even though it also does the log-softmax and gathering.
* ``bf16_vs_fp32`` - tokens/s of the batched scoring workload in the default dtype (``--dtype``,
  ``auto`` = bf16 on CPUs with AVX-512 BF16 / AMX) over the same workload on an fp32 copy, both with
  prefix sharing off (every pair encoded in full), so the figure is the dtype's alone.
* ``roofline_fraction`` - achieved FLOP/s of batched scoring in the default dtype, prefix sharing off so
  that every counted token is really computed (shared prefixes would inflate it), over the machine's
  bf16 matmul FLOP/s (a 2048x2048 @ 2048x2048 bf16 matmul, median of 5, torch's default thread
  count, measured right after each batched-scoring repetition; median of the per-repetition
  fractions). The FLOP model is deliberately simple: ``2 x (parameters excluding the
  token embedding)`` per input token (prompt and continuation; attention-score FLOPs are ignored,
  they are small at ~120 tokens) plus ``2 x vocab x hidden`` per *continuation* token (the only
  positions ``score`` projects onto the vocabulary). The matmul figure is not the hardware's peak,
  just what torch reaches on a large square bf16 product here.

Absolute times depend on the machine and on whatever else runs on it (on a shared 2-core VM the same
bf16 matmul has measured anywhere from ~250 to ~1900 GFLOP/s), so every figure is a ratio of two
timings taken in the same process moments apart: the repetitions of the two sides of each ratio are
interleaved (the per-prompt generation loop is cut into ``--reps`` chunks, each followed by one
batched call) and each figure is the median of the per-repetition ratios. Timings use
``time.perf_counter`` after warm-up calls. The per-prompt generation loop may be timed on a subset
and scaled linearly (``--loop-rows``; ``--quick`` does this and says so). The load average is printed
at start and end: when it is well above the core count, other processes compete for the cores and
the small-batch sides (per-prompt, per-pair) slow down far more than the batched ones, which
inflates ``generate_speedup`` and ``score_speedup``; rerun on a quiet machine (or with
``--threads 1``, which is much less sensitive to competing processes).

The last line printed is always::

    RESULT generate_speedup=X score_speedup=Y score_vs_raw=Z bf16_vs_fp32=A roofline_fraction=B \
        generate_tok_s=C generate_roofline_fraction=D generate_eager_tok_s=F generate_shared_prefix_speedup=E

(one line; ``--only decode`` prints only ``generate_tok_s``, ``generate_roofline_fraction`` and
``generate_eager_tok_s``, ``--only shared``
only ``generate_shared_prefix_speedup``).

Usage::

    python benchmarks/lm_throughput.py                # ~4 min on 2 quiet CPU cores
    python benchmarks/lm_throughput.py --quick        # ~1.5 min
    python benchmarks/lm_throughput.py --only decode  # generate_tok_s and generate_roofline_fraction only
    python benchmarks/lm_throughput.py --only shared  # generate_shared_prefix_speedup only
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from common import load_average, median_time, timed  # noqa: E402  (also puts the checkout on sys.path)

from popsim.lm import Chat  # noqa: E402
from popsim.lm.hf import HFLanguageModel  # noqa: E402

MODEL = "smollm2-135m-instruct"

GENRES = ["thriller", "comedy", "documentary", "romance", "space opera", "western", "horror", "musical"]
TASKS = [
    "Write a one-sentence review of movie #{i}.",
    "In one sentence, say whether you would recommend movie #{i} to a friend.",
    "Describe the ending of {genre} movie #{i} in a single sentence.",
    "Give a short, honest opinion of the {genre} film #{i}.",
    "Summarise what you liked least about movie #{i} in one sentence.",
    "Write a tweet-length reaction to the {genre} movie #{i}.",
]
PERSONAS = [
    "You are Maria, a 34-year-old nurse from Lisbon who watches films on night-shift breaks. "
    "You care about believable characters and get impatient with long action scenes.",
    "You are Tom, a retired history teacher from Ohio. You notice every historical inaccuracy and "
    "love slow, dialogue-driven dramas; you rarely give more than three stars.",
    "You are Aiko, a 21-year-old design student in Osaka. You judge films mostly by their colour, "
    "framing and soundtrack, and you write with lots of enthusiasm.",
    "You are Sam, a 45-year-old truck driver who listens to audiobooks and watches action films at "
    "motels. You like clear plots, practical effects and endings that do not drag on.",
]
EXEMPLARS = [
    "Solid acting, but the second half drags and the twist is obvious from the first scene. "
    "Three stars, mostly for the lead's performance.",
    "A gorgeous film: every frame looks like a painting and the score stayed with me for days. "
    "Easily my favourite this year.",
    "Too long and too loud. I lost track of who was fighting whom and why. Two stars at best.",
    "Warm, funny and surprisingly sad near the end. The dialogue felt real. Four stars.",
]
CONTINUATIONS = [
    "Honestly, it was better than I expected, with a clever plot and a great final scene.",
    "I found the pacing slow and the characters flat, so I would not watch it again.",
    "The soundtrack is wonderful, but the story falls apart in the last twenty minutes.",
    "A pleasant surprise: tight, funny and moving, and I recommended it to all my friends.",
]


# one opening word per decode prompt, each its own first token in SmolLM2's vocabulary: no shared prefix
OPENERS = (
    "Today Last After Before When While During Although Because Since Every Some Many Most Few One Two Three "
    "Four Five Six Seven Eight Ten My Our Your His Her Their This That These Those Dear Please Imagine Consider "
    "Describe Explain Write Tell Give Share List Name Review Rate Compare Recommend Seeing Reading Having Being "
    "Going Looking Thinking Feeling Remember Ask Answer Start Begin Open"
).split()
DECODE_ROWS = 64
DECODE_TOKENS = 64


def decode_prompts(lm: HFLanguageModel) -> list[str]:
    prompts = [f"{OPENERS[i]}: a short review of the {GENRES[i % len(GENRES)]} movie #{i + 1}.\n"
               for i in range(DECODE_ROWS)]
    firsts = {lm.encode_prompt(p)[0] for p in prompts}
    assert len(firsts) == DECODE_ROWS, "decode prompts must not share a first token"
    return prompts


def decode_roofline(lm: HFLanguageModel, flops_per_token: int, reps: int) -> tuple[float, float, float]:
    """(new tokens/s with the compiled step, its fraction of the bf16 matmul reference, new tokens/s with eager
    steps). A call this size (64 x 64 tokens) decodes eagerly by default (``compile_decode_tokens``): the
    compiled figures are the steady state of a process that has compiled the step; the compile is timed too."""
    prompts = decode_prompts(lm)
    seeds = [2000 + i for i in range(DECODE_ROWS)]
    kw = dict(max_new_tokens=DECODE_TOKENS, temperature=0.8, seed=seeds, ignore_eos=True)
    n_new = DECODE_ROWS * DECODE_TOKENS
    saved = lm.compile_decode_tokens
    try:
        lm.compile_decode_tokens = n_new + 1  # eager steps
        lm.generate(prompts, **kw)  # warm-up
        eager = statistics.median(timed(lambda: lm.generate(prompts, **kw)) for _ in range(reps))
        lm.compile_decode_tokens = 0  # the compiled step
        first = timed(lambda: lm.generate(prompts, **kw))  # compiles at these shapes (once per process)
        times, gflops = [], []
        for _ in range(reps):
            times.append(timed(lambda: lm.generate(prompts, **kw)))
            gflops.append(matmul_gflops(torch.bfloat16, reps=5))
    finally:
        lm.compile_decode_tokens = saved
    fractions = [n_new * flops_per_token / t / 1e9 / g for t, g in zip(times, gflops)]
    tok_s = n_new / statistics.median(times)
    print(f"decode: {DECODE_ROWS} prompts x {DECODE_TOKENS} new tokens, {lm.dtype}: eager steps "
          f"{n_new / eager:.0f} new tokens/s; compiled step (first call {first:.1f} s, compile included) "
          f"{', '.join(f'{t:.2f}' for t in times)} s per call, {tok_s:.0f} new tokens/s; "
          f"{flops_per_token / 1e6:.0f}M FLOPs per new token; bf16 matmul "
          f"{', '.join(f'{g:.0f}' for g in gflops)} GFLOP/s; fractions "
          f"{', '.join(f'{f:.3f}' for f in fractions)}")
    return tok_s, statistics.median(fractions), n_new / eager


def gen_prompts(n: int) -> list[Chat]:
    return [
        Chat.of(TASKS[i % len(TASKS)].format(i=i + 1, genre=GENRES[i % len(GENRES)])) for i in range(n)
    ]


def score_pairs(n: int) -> tuple[list[Chat], list[str]]:
    prompts, conts = [], []
    for i in range(n):
        genre = GENRES[i % len(GENRES)]
        user = (
            f"Here is a review you wrote last week: \"{EXEMPLARS[(i // 4) % len(EXEMPLARS)]}\"\n\n"
            f"Now write a short review of the {genre} movie #{i + 1} in the same voice."
        )
        prompts.append(Chat.of(user, system=PERSONAS[i % len(PERSONAS)]))
        conts.append(CONTINUATIONS[(i + i // 4) % len(CONTINUATIONS)])
    return prompts, conts


def shared_prefix_generation(lm: HFLanguageModel, rows: int, reps: int) -> float:
    """Time ``generate`` over prompts that share prefixes, with ``prefix_sharing`` off over on (median ratio)."""
    from popsim.lm.generate import shared_prefixes

    prompts, _ = score_pairs(rows)
    ids = [lm.encode_prompt(p) for p in prompts]
    shares = shared_prefixes(ids, lm.min_shared_prefix)
    saved = sum(n for r, (lead, n) in enumerate(shares) if lead != r)
    kw = dict(max_new_tokens=24, temperature=0.8, seed=[3000 + i for i in range(rows)])
    texts: dict[bool, list[str]] = {}
    times: dict[bool, list[float]] = {True: [], False: []}

    def run(sharing: bool) -> None:
        lm.prefix_sharing = sharing
        texts[sharing] = lm.generate(prompts, **kw)

    try:
        run(True), run(False)  # warm-up
        for _ in range(reps):
            for sharing in (False, True):
                times[sharing].append(timed(lambda sharing=sharing: run(sharing)))
    finally:
        lm.prefix_sharing = True
    speedup = statistics.median(off / on for off, on in zip(times[False], times[True]))
    same = sum(a == b for a, b in zip(texts[True], texts[False]))
    print(f"shared-prefix generation: {rows} prompts, {sum(map(len, ids))} prompt tokens, {saved} "
          f"({saved / sum(map(len, ids)):.0%}) encoded once instead of per row; off "
          f"{', '.join(f'{t:.2f}' for t in times[False])} s, on {', '.join(f'{t:.2f}' for t in times[True])} s; "
          f"texts equal in {same}/{rows} rows ({lm.dtype}); generate_shared_prefix_speedup {speedup:.2f}")
    return speedup


def right_padded(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = torch.tensor(s)
        mask[r, : len(s)] = 1
    return ids, mask


def matmul_gflops(dtype: torch.dtype, size: int = 2048, reps: int = 5) -> float:
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    a @ b
    return 2 * size**3 / median_time(lambda: a @ b, reps) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller run (fewer rows and repetitions)")
    ap.add_argument("--dtype", default="auto", help="default dtype of the model: auto, bf16 or fp32")
    ap.add_argument("--rows", type=int, default=None,
                    help="prompts/pairs per batch (default 64, quick 32)")
    ap.add_argument("--reps", type=int, default=None,
                    help="repetitions of cheap timings (default 3, quick 2)")
    ap.add_argument("--loop-rows", type=int, default=None,
                    help="time the per-prompt generate loop on this many rows and scale linearly "
                    "(default all, quick 8)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's default, normally one per core)")
    ap.add_argument("--new-tokens", type=int, default=20, help="max_new_tokens for generate_speedup")
    ap.add_argument("--only", choices=["all", "decode", "shared"], default="all",
                    help="decode: only generate_tok_s and generate_roofline_fraction; shared: only "
                    "generate_shared_prefix_speedup")
    args = ap.parse_args()
    rows = args.rows or (32 if args.quick else 64)
    reps = args.reps or (2 if args.quick else 3)
    loop_rows = min(rows, args.loop_rows or (8 if args.quick else rows))
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
          f"rows {rows}, reps {reps}; load average before start {load_average()}")
    matmul_gflops(torch.bfloat16, reps=3)  # warm-up
    fp32_gflops = matmul_gflops(torch.float32, reps=3)

    lm = HFLanguageModel(MODEL, dtype=args.dtype)
    cfg = lm.model.config
    n_params = sum(p.numel() for p in lm.model.parameters())  # tied head counted once
    n_embed = lm.model.get_input_embeddings().weight.numel()
    body_flops = 2 * (n_params - n_embed)
    head_flops = 2 * cfg.vocab_size * cfg.hidden_size
    print(f"model {lm.name} dtype {lm.dtype} device {lm.device}: {n_params / 1e6:.1f}M params, "
          f"{(n_params - n_embed) / 1e6:.1f}M excluding the embedding; FLOPs/token body "
          f"{body_flops / 1e6:.0f}M, vocabulary projection {head_flops / 1e6:.0f}M")

    # ---------------------------------------------------------------- shared prefixes, decode roofline
    shared_key = f"generate_shared_prefix_speedup={shared_prefix_generation(lm, rows, reps):.2f}"
    if args.only == "shared":
        print(f"total benchmark time {time.perf_counter() - t_start:.0f} s; load average at end {load_average()}")
        print(f"RESULT {shared_key}")
        return
    gen_tok_s, gen_fraction, eager_tok_s = decode_roofline(lm, body_flops + head_flops, reps)
    decode_keys = (f"generate_tok_s={gen_tok_s:.0f} generate_roofline_fraction={gen_fraction:.3f} "
                   f"generate_eager_tok_s={eager_tok_s:.0f}")
    if args.only == "decode":
        print(f"total benchmark time {time.perf_counter() - t_start:.0f} s; load average at end {load_average()}")
        print(f"RESULT {decode_keys}")
        return

    # ---------------------------------------------------------------- (a) generation
    # The per-prompt loop is cut into `reps` chunks, each followed by one batched call, so a burst of
    # load from elsewhere on the machine hits both sides of the ratio alike.
    prompts = gen_prompts(rows)
    seeds = [1000 + i for i in range(rows)]
    kw = dict(max_new_tokens=args.new_tokens, temperature=0.8)
    lm.generate(prompts[:1], max_new_tokens=4, seed=[0])
    lm.generate(prompts[:8], max_new_tokens=4, seed=list(range(8)))
    loop_out: list[str] = []
    batch_out: list[str] = []

    def run_loop(chunk: range) -> None:
        for i in chunk:
            loop_out.extend(lm.generate([prompts[i]], seed=[seeds[i]], **kw))

    def run_batch() -> None:
        batch_out[:] = lm.generate(prompts, seed=seeds, **kw)

    t_chunks, t_batch = [], []
    bounds = [round(k * loop_rows / reps) for k in range(reps + 1)]
    for k in range(reps):
        t_chunks.append(timed(lambda k=k: run_loop(range(bounds[k], bounds[k + 1]))))
        t_batch.append(timed(run_batch))
    t_loop = sum(t_chunks)
    t_loop_all = t_loop * rows / loop_rows
    t_gen = statistics.median(t_batch)
    # each chunk is paired with the batched call right after it; the figure is the median pair ratio
    generate_speedup = statistics.median(
        t / (bounds[k + 1] - bounds[k]) * rows / t_batch[k] for k, t in enumerate(t_chunks)
    )
    gen_tokens = sum(len(lm.encode_continuation(t)) for t in batch_out)
    same = sum(a == b for a, b in zip(loop_out, batch_out))
    scaled = f" (timed {loop_rows} prompts, scaled x{rows / loop_rows:g})" if loop_rows < rows else ""
    print(f"generate per-prompt: {t_loop_all:.2f} s for {rows} prompts{scaled}, "
          f"{t_loop / loop_rows * 1000:.0f} ms/prompt")
    print(f"generate batched: {t_gen:.2f} s for {rows} prompts (median of {reps}), {gen_tokens} new "
          f"tokens, {gen_tokens / t_gen:.1f} tokens/s; batched text equals per-prompt text in "
          f"{same}/{loop_rows} rows")
    print(f"generate_speedup {generate_speedup:.2f}")

    # ---------------------------------------------------------------- (b), (c), dtype, roofline
    s_prompts, s_conts = score_pairs(rows)
    p_ids = [lm.encode_prompt(p) for p in s_prompts]
    c_ids = [lm.encode_continuation(c) for c in s_conts]
    n_prompt_tok = sum(map(len, p_ids))
    n_cont_tok = sum(map(len, c_ids))
    n_tok = n_prompt_tok + n_cont_tok
    print(f"score workload: {rows} pairs, prompt tokens mean {n_prompt_tok / rows:.0f} "
          f"(min {min(map(len, p_ids))}, max {max(map(len, p_ids))}), continuation tokens mean "
          f"{n_cont_tok / rows:.1f}, {n_tok} tokens in all")
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    ids, mask = right_padded([p + c for p, c in zip(p_ids, c_ids)], pad)
    ids, mask = ids.to(lm.device), mask.to(lm.device)
    lm32 = HFLanguageModel(MODEL, dtype="fp32", prefix_sharing=False)

    scores: dict[str, torch.Tensor] = {}

    def per_pair() -> None:
        scores["pair"] = torch.cat([lm.score([p], [c]) for p, c in zip(s_prompts, s_conts)])

    def batched() -> None:
        scores["batched"] = lm.score(s_prompts, s_conts)

    def raw() -> None:
        with torch.inference_mode():
            lm.model(input_ids=ids, attention_mask=mask).logits  # noqa: B018

    def dense() -> None:  # every pair encoded in full: the FLOP count below is exactly what runs
        lm.prefix_sharing = False
        try:
            lm.score(s_prompts, s_conts)
        finally:
            lm.prefix_sharing = True

    def batched_fp32() -> None:
        lm32.score(s_prompts, s_conts)

    for p, c in zip(s_prompts[:2], s_conts[:2]):
        lm.score([p], [c])
    batched()
    raw()
    dense()
    batched_fp32()
    samples: dict[str, list[float]] = {"pair": [], "score": [], "raw": [], "dense": [], "fp32": [], "gflops": []}
    for _ in range(reps):  # interleaved, for the same reason as above
        samples["pair"].append(timed(per_pair))
        samples["score"].append(timed(batched))
        samples["raw"].append(timed(raw))
        samples["dense"].append(timed(dense))
        samples["fp32"].append(timed(batched_fp32))
        samples["gflops"].append(matmul_gflops(torch.bfloat16, reps=5))
    t_pair, t_score, t_raw, t_dense, t_score32, bf16_gflops = (statistics.median(v) for v in samples.values())
    work_flops = n_tok * body_flops + n_cont_tok * head_flops

    def paired(num: str, den: str) -> float:
        """Median over repetitions of num/den, each pair timed moments apart."""
        return statistics.median(a / b for a, b in zip(samples[num], samples[den]))

    fractions = [work_flops / t / 1e9 / g for t, g in zip(samples["dense"], samples["gflops"])]
    print(f"score per-pair: {t_pair:.2f} s, {n_tok / t_pair:.0f} tokens/s")
    print(f"score batched: {t_score:.2f} s, {n_tok / t_score:.0f} tokens/s "
          f"({n_cont_tok / t_score:.0f} continuation tokens/s)")
    score_speedup = paired("pair", "score")
    gap = float((scores["pair"] - scores["batched"]).abs().max())
    print(f"max |batched - per-pair| score: {gap:.2g} nats ({lm.dtype})")
    print(f"score_speedup {score_speedup:.2f}")
    print(f"raw forward (full logits, {ids.shape[0]}x{ids.shape[1]} right-padded): {t_raw:.2f} s, "
          f"{n_tok / t_raw:.0f} tokens/s")
    score_vs_raw = paired("raw", "score")
    print(f"score_vs_raw {score_vs_raw:.2f}")
    print(f"score batched, every pair in full (no prefix sharing): {lm.dtype} {t_dense:.2f} s, "
          f"{n_tok / t_dense:.0f} tokens/s; fp32 {t_score32:.2f} s, {n_tok / t_score32:.0f} tokens/s")
    bf16_vs_fp32 = paired("fp32", "dense")
    print(f"bf16_vs_fp32 {bf16_vs_fp32:.2f}")

    achieved = work_flops / t_dense / 1e9
    roofline_fraction = statistics.median(fractions)
    print(f"matmul 2048^3: bf16 {bf16_gflops:.0f} GFLOP/s (per repetition: "
          f"{', '.join(f'{g:.0f}' for g in samples['gflops'])}), fp32 {fp32_gflops:.0f} GFLOP/s")
    print(f"scoring FLOPs/token (workload mean) {work_flops / n_tok / 1e6:.0f}M; achieved "
          f"{achieved:.0f} GFLOP/s vs bf16 matmul {bf16_gflops:.0f} GFLOP/s")
    print(f"roofline_fraction {roofline_fraction:.3f}")
    print(f"total benchmark time {time.perf_counter() - t_start:.0f} s; "
          f"load average at end {load_average()}")
    print(
        f"RESULT generate_speedup={generate_speedup:.2f} score_speedup={score_speedup:.2f} "
        f"score_vs_raw={score_vs_raw:.2f} bf16_vs_fp32={bf16_vs_fp32:.2f} "
        f"roofline_fraction={roofline_fraction:.3f} {decode_keys} {shared_key}"
    )


if __name__ == "__main__":
    main()
