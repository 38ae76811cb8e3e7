"""MoP core on the hash test double (fast) and on the real packaged SmolLM2."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from popsim.exceptions import DataError, NotFittedError, RunDirectoryError
from popsim.lm.testing import HashLM
from popsim.mop import MixtureOfPersonas, PromptStyle, Records, build_prompt
from popsim.mop.gating import exemplar_marginal
from popsim.mop.objective import PairObjective, own_exemplar_mask
from popsim.mop.prompts import INSTRUCTION, REVIEWER
from popsim.mop.scoring import ScoreCache, pair_log_likelihood

CONTEXTS = [f"a movie you rate {1 + i % 10}/10" for i in range(60)]
REVIEWS = [("great fun film with fine acting" if i % 3 else "boring slow plot and bad acting") for i in range(60)]


def _fit(encoder, **kw):
    # the paper's preset with the load balancing and sticky pairs these tests were written against
    params = dict(n_personas=3, n_exemplars=20, epochs=2, batch_size=8, max_train_records=40, verbose=False,
                  style=PromptStyle.reviews(), preset="paper", balance=1.0, stickiness=4.0)
    params.update(kw)
    return MixtureOfPersonas(HashLM(), encoder, **params).fit(Records(CONTEXTS, REVIEWS))


def test_objective_gradients_reach_projections_and_used_temperatures(encoder):
    model = _fit(encoder, epochs=1)
    records = Records(CONTEXTS, REVIEWS)
    h_x = torch.from_numpy(encoder.encode(records.contexts))
    model.gate_.zero_grad()
    batch = np.arange(8)
    loss = PairObjective(model, records, h_x).loss(batch)
    loss.backward()
    for name in ("W_x", "W_g", "W_e"):
        grad = getattr(model.gate_, name).weight.grad
        assert grad is not None and grad.abs().sum() > 0, name
    mask = own_exemplar_mask(records.groups[batch], model.exemplars_.groups)
    log_pi, log_omega = model.gate_(h_x[batch], model.h_g_, model.h_e_, mask)
    top = (log_pi.unsqueeze(2) + log_omega).flatten(1).topk(model.top_m, dim=1).indices
    used = set((top // model.h_e_.shape[0]).flatten().tolist())
    grads = model.gate_.log_tau.grad
    for k in range(len(model.personas_)):
        assert (grads[k] != 0) == (k in used), k


def test_own_exemplar_never_enters_top_m(encoder):
    model = _fit(encoder, epochs=1, n_exemplars=60)  # every record is in the pool
    records = Records(CONTEXTS, REVIEWS)
    h_x = torch.from_numpy(encoder.encode(records.contexts))
    batch = np.arange(len(records))
    mask = own_exemplar_mask(records.groups[batch], model.exemplars_.groups)
    log_pi, log_omega = model.gate_(h_x, model.h_g_, model.h_e_, mask)
    top = (log_pi.unsqueeze(2) + log_omega).flatten(1).topk(model.top_m, dim=1).indices
    js = top % model.h_e_.shape[0]
    for row in range(len(records)):
        own = np.flatnonzero(model.exemplars_.groups == records.groups[row])
        assert not set(js[row].tolist()) & set(own.tolist())


def test_fit_is_deterministic_for_a_seed(encoder):
    a, b = _fit(encoder, random_state=3), _fit(encoder, random_state=3)
    assert np.array_equal(a.mixing_weights(CONTEXTS[:5]), b.mixing_weights(CONTEXTS[:5]))
    assert np.array_equal(a.temperatures_, b.temperatures_)
    draws_a = a.sample(CONTEXTS, np.random.default_rng(1))
    draws_b = b.sample(CONTEXTS, np.random.default_rng(1))
    assert all(np.array_equal(draws_a[k], draws_b[k]) for k in draws_a)


def test_sample_follows_mixing_weights(encoder):
    model = _fit(encoder)
    ctx = [CONTEXTS[0]] * 4000
    draws = model.sample(ctx, np.random.default_rng(0))
    freq = np.bincount(draws["persona"], minlength=len(model.personas_)) / len(ctx)
    assert np.abs(freq - model.mixing_weights(CONTEXTS[:1])[0]).max() < 0.03
    assert np.allclose(draws["temperature"], model.temperatures_[draws["persona"]])


def test_save_load_roundtrip_and_transfer_to_another_lm(encoder, tmp_path):
    model = _fit(encoder)
    model.save(tmp_path / "mop")
    loaded = MixtureOfPersonas.load(tmp_path / "mop", lm=HashLM("another-lm"), encoder=encoder)
    assert np.allclose(loaded.mixing_weights(CONTEXTS[:4]), model.mixing_weights(CONTEXTS[:4]))
    assert [p.text for p in loaded.personas_] == [p.text for p in model.personas_]
    assert loaded.lm.name == "another-lm"  # the gate transfers; prompts now go to the other LM
    (tmp_path / "mop" / "gate.safetensors").write_bytes(b"truncated")
    with pytest.raises(RunDirectoryError, match="corrupt"):
        MixtureOfPersonas.load(tmp_path / "mop", encoder=encoder)


def _load_without(folder, tensor: str, encoder) -> MixtureOfPersonas:
    """Load a saved model after removing one tensor from its file, as a file an older popsim wrote."""
    from safetensors.torch import load, save

    tensors = load((folder / "gate.safetensors").read_bytes())
    del tensors[tensor]
    (folder / "gate.safetensors").write_bytes(save(tensors))
    return MixtureOfPersonas.load(folder, lm=HashLM(), encoder=encoder)


def _exemplar_shares(model, records):
    """P(exemplar j | x), own exemplar masked, for every training context: (n, N) and the log-weights."""
    h_x = torch.from_numpy(model.encoder.encode(records.gate_inputs))
    with torch.no_grad():
        mask = own_exemplar_mask(records.groups, model.exemplars_.groups)
        log_pi, log_omega = model.gate_(h_x, model.h_g_, model.h_e_, mask, model.exemplar_bias_,
                                        persona_bias=model.persona_bias_)
    return exemplar_marginal(log_pi, log_omega), log_omega


def test_calibrate_exemplars_draws_every_pool_member_equally_often_and_keeps_the_odds_ratios(encoder, tmp_path):
    """Retrieval-started gates favour some exemplars for every context; calibration evens their use out."""
    settings = dict(gate_init_scale=30.0, pair_embedding="mean", epochs=1)
    plain = _fit(encoder, **settings)
    calibrated = _fit(encoder, calibrate_exemplars=True, **settings)
    assert torch.equal(plain.gate_.W_x.weight, calibrated.gate_.W_x.weight)  # same training, then the prior
    records = Records(CONTEXTS, REVIEWS)
    n_ex = len(plain.exemplars_)
    plain_share, plain_log = _exemplar_shares(plain, records)
    share, log_omega = _exemplar_shares(calibrated, records)
    assert float((plain_share.mean(0) * n_ex - 1).abs().max()) > 0.2  # uncalibrated: far from even (20x the bar below)
    assert float((share.mean(0) * n_ex - 1).abs().max()) < 0.01
    # per persona and context, calibrated minus plain log-weights = bias + a row constant (odds ratios kept)
    diff = torch.where(torch.isfinite(plain_log), log_omega - plain_log, torch.nan)
    row_const = torch.nanmean(diff - calibrated.exemplar_bias_, dim=-1, keepdim=True)
    torch.testing.assert_close(torch.nan_to_num(diff - calibrated.exemplar_bias_ - row_const), torch.zeros_like(diff),
                               atol=1e-4, rtol=0)
    calibrated.save(tmp_path / "mop")
    loaded = MixtureOfPersonas.load(tmp_path / "mop", lm=HashLM(), encoder=encoder)
    torch.testing.assert_close(loaded.exemplar_bias_, calibrated.exemplar_bias_)
    draws = [m.sample(CONTEXTS, np.random.default_rng(3))["exemplar"] for m in (loaded, calibrated)]
    np.testing.assert_array_equal(*draws)
    older = _load_without(tmp_path / "mop", "exemplar_bias", encoder)  # written before calibration existed
    assert older.exemplar_bias_.shape == (n_ex,) and not older.exemplar_bias_.any()


TOPICS = {"football": "the team scored a late goal and won the league match",
          "markets": "shares fell as the bank reported lower quarterly profits",
          "cooking": "simmer the onions in butter and season the sauce with salt"}
TOPIC_CONTEXTS = [f"a {topic} story, number {i}" for i in range(20) for topic in TOPICS]
TOPIC_TEXTS = [TOPICS[c.split()[1]] + f" ({i})" for i, c in enumerate(TOPIC_CONTEXTS)]


def test_persona_gate_from_clusters_routes_contexts_to_their_cluster_at_the_cluster_shares(encoder, tmp_path):
    """``persona_gate_init='clusters'`` + ``calibrate_personas``: pi(x) follows the cluster x resembles, and
    averaged over the training contexts each persona is drawn as often as its cluster's share of the pool."""
    records = Records(TOPIC_CONTEXTS, TOPIC_TEXTS)
    settings = dict(n_personas=3, n_exemplars=30, epochs=1, batch_size=8, max_train_records=24, verbose=False,
                    style=PromptStyle.reviews(), gate_init_scale=30.0, pair_embedding="mean")
    plain = MixtureOfPersonas(HashLM(), encoder, **settings).fit(records)
    routed = MixtureOfPersonas(HashLM(), encoder, persona_gate_init="clusters", calibrate_personas=True,
                               **settings).fit(records)
    topic_of_exemplar = np.asarray([x.split()[1] for x in routed.exemplars_.inputs])
    pi, pi_plain = routed.mixing_weights(TOPIC_CONTEXTS), plain.mixing_weights(TOPIC_CONTEXTS)
    for topic in TOPICS:
        rows = [i for i, c in enumerate(TOPIC_CONTEXTS) if c.split()[1] == topic]
        # the persona whose cluster holds this topic's exemplars
        k = np.bincount(routed.persona_labels_[topic_of_exemplar == topic], minlength=3).argmax()
        others = [i for i in range(len(TOPIC_CONTEXTS)) if i not in rows]
        assert pi[rows, k].mean() > 0.6 and pi[rows, k].mean() - pi[others, k].mean() > 0.4, (topic, pi[rows].mean(0))
        # from the uniform start, a few steps do not make the gate tell the topics apart (0.01-0.10 on the CPUs
        # seen: the encoder's kernels differ by host, so the bound leaves room, and stays far below the 0.4 above)
        assert abs(pi_plain[rows, k].mean() - pi_plain[others, k].mean()) < 0.2
    prior = np.bincount(routed.persona_labels_, minlength=3) / len(routed.exemplars_)
    np.testing.assert_allclose(pi.mean(0), prior, atol=0.01)  # equal weights: the plain mean is the target
    routed.save(tmp_path / "mop")
    loaded = MixtureOfPersonas.load(tmp_path / "mop", lm=HashLM(), encoder=encoder)
    np.testing.assert_allclose(loaded.mixing_weights(TOPIC_CONTEXTS), pi, atol=1e-6)
    older = _load_without(tmp_path / "mop", "persona_bias", encoder)  # written before persona calibration
    assert older.persona_bias_.shape == (3,) and not older.persona_bias_.any()
    with pytest.raises(DataError, match="gate_init_scale"):
        MixtureOfPersonas(HashLM(), encoder, persona_gate_init="clusters", gate_init_scale=0.0).fit(records)
    with pytest.raises(DataError, match="persona_gate_init"):
        MixtureOfPersonas(HashLM(), encoder, persona_gate_init="kmeans").fit(records)


def test_unfitted_model_raises_clear_error(encoder):
    with pytest.raises(NotFittedError, match="fit"):
        MixtureOfPersonas(HashLM(), encoder).mixing_weights(["x"])


def test_multiple_choice_likelihood_is_normalised_over_options():
    cache = ScoreCache(HashLM())
    opts = ("too little", "about right", "too much")
    prompts = ["Q: spending on roads?"] * 3
    ll, _ = pair_log_likelihood(cache, prompts, list(opts), [opts] * 3, torch.ones(3))
    assert np.isclose(torch.logsumexp(ll, 0).item(), 0.0, atol=1e-5)
    assert cache.misses == 3  # the three options of one prompt are scored once
    pair_log_likelihood(cache, prompts, list(opts), [opts] * 3, torch.full((3,), 0.5))
    assert cache.misses == 3  # a new temperature needs no new LM call


def test_prompt_keeps_data_braces_inert():
    prompt = build_prompt("You are {persona}.", ("{x}", "{y} {0}"), "the movie {title}", PromptStyle.reviews())
    text = "\n".join(content for _, content in prompt.messages)
    assert "{persona}" in text and "{y} {0}" in text and "{title}" in text


def test_persona_in_system_replaces_the_real_templates_default_identity(smollm):
    """Default: the paper's single user turn after a neutral reviewer's system message (without one the
    template adds SmolLM2's own identity); the option puts instruction, persona and exemplar in the system
    message instead."""
    one_turn = build_prompt("You are a grumpy critic.", ("the movie Heat", "Too long."), "the movie Alien",
                            PromptStyle.reviews())
    assert one_turn.messages[0] == ("system", REVIEWER) and [r for r, _ in one_turn.messages] == ["system", "user"]
    assert "SmolLM" not in smollm.render(one_turn) and "Hugging Face" not in smollm.render(one_turn)
    bare = build_prompt("You are a grumpy critic.", ("the movie Heat", "Too long."), "the movie Alien",
                        PromptStyle(**{**vars(PromptStyle.reviews()), "system": ""}))
    assert [role for role, _ in bare.messages] == ["user"]
    assert "named SmolLM" in smollm.render(bare)
    style = PromptStyle(**{**vars(PromptStyle.reviews()), "persona_in_system": True})
    prompt = build_prompt("You are a grumpy critic.", ("the movie Heat", "Too long."), "the movie Alien", style)
    assert [role for role, _ in prompt.messages] == ["system", "user"]
    rendered = smollm.render(prompt)
    assert "named SmolLM" not in rendered
    assert rendered.index("grumpy critic") < rendered.index("Too long.") < rendered.index("the movie Alien")


def test_exemplar_turn_is_an_earlier_exchange_on_the_real_template(smollm):
    """The option renders the exemplar as the model's own earlier answer to the exemplar's task."""
    style = PromptStyle(**{**vars(PromptStyle.reviews()), "persona_in_system": True, "exemplar_turn": True})
    prompt = build_prompt("You are a grumpy critic.", ("the movie Heat", "Too long."), "the movie Alien", style)
    assert prompt.messages == (
        ("system", INSTRUCTION + "\n\nYou are a grumpy critic."),
        ("user", "Please write a review for the movie Heat."), ("assistant", "Too long."),
        ("user", "Please write a review for the movie Alien."))
    rendered = smollm.render(prompt)
    assert rendered.index("grumpy critic") < rendered.index("Heat") < rendered.index("Too long.") < \
        rendered.index("the movie Alien")
    one_turn = build_prompt(None, ("the movie Heat", "Too long."), "the movie Alien",
                            PromptStyle(**{**vars(PromptStyle.reviews()), "exemplar_turn": True}))
    assert [role for role, _ in one_turn.messages] == ["system", "user", "assistant", "user"]
    assert one_turn.messages[0][1] == REVIEWER and one_turn.messages[1][1].startswith(INSTRUCTION)


def test_exemplar_turn_steers_the_real_smollm_more_than_a_quoted_exemplar(smollm, shared_data):
    """Why the option exists: another real review shown as the model's earlier answer raises the likelihood
    of a real review more than the same review quoted in the system message (fp32: +3.7 vs +0.4 nats)."""
    import pandas as pd

    frame = pd.read_csv(shared_data / "imdb-reviews-ratings" / "imdb_train_sample2500.csv").head(32)
    texts = [" ".join(t.replace("<br />", " ").split()[:30]) for t in frame["text"]]
    contexts = [f"a review of a movie you rate {r}/10" for r in frame["rating"]]
    quoted = PromptStyle(kind="chat", exemplar_intro="You have written", task_intro="Please write",
                         persona_in_system=True)
    gains = {}
    for name, style in (("quoted", quoted), ("turn", PromptStyle(**{**vars(quoted), "exemplar_turn": True}))):
        alone = smollm.score([build_prompt(None, None, c, style) for c in contexts[:16]], texts[:16])
        shown = smollm.score([build_prompt(None, (contexts[16 + i], texts[16 + i]), contexts[i], style)
                              for i in range(16)], texts[:16])
        gains[name] = (shown - alone).numpy()
    assert gains["turn"].mean() > 2.0 and (gains["turn"] > 0).mean() >= 0.7
    assert gains["turn"].mean() > gains["quoted"].mean() + 1.0


def test_real_smollm_fit_samples_and_scores(smollm, encoder, tmp_path):
    """Every MoP capability once on the real packaged LM (small sizes)."""
    model = MixtureOfPersonas(smollm, encoder, n_personas=2, n_exemplars=8, epochs=1, batch_size=4,
                              max_train_records=8, verbose=False, style=PromptStyle.reviews(),
                              gate_init_scale=30.0, calibrate_exemplars=True, persona_gate_init="clusters",
                              calibrate_personas=True)
    model.fit(Records(CONTEXTS[:20], REVIEWS[:20]))
    assert len(model.personas_) == 2 and len({p.text for p in model.personas_}) == 2
    assert any(p.source == "lm" and len(p.text) > 40 for p in model.personas_)  # summarised by the LM itself
    share, _ = _exemplar_shares(model, Records(CONTEXTS[:20], REVIEWS[:20]))
    assert float((share.mean(0) * 8 - 1).abs().max()) < 0.01  # calibrated: every exemplar drawn equally often
    prior = np.bincount(model.persona_labels_, minlength=2) / 8  # and each persona as often as its cluster
    np.testing.assert_allclose(model.mixing_weights(CONTEXTS[:20]).mean(0), prior, atol=0.01)
    assert model.fit_info_["cache_misses"] > 0
    ll, n_tok = model.log_likelihood(Records(CONTEXTS[20:24], REVIEWS[20:24]), n_samples=2)
    assert np.isfinite(ll).all() and (n_tok > 0).all()
    model.save(tmp_path / "m")
    again = MixtureOfPersonas.load(tmp_path / "m", lm=smollm, encoder=encoder)
    assert again.sample(CONTEXTS[:3], np.random.default_rng(0))["persona"].shape == (3,)
    torch.testing.assert_close(again.exemplar_bias_, model.exemplar_bias_)
    torch.testing.assert_close(again.persona_bias_, model.persona_bias_)


def test_sticky_selection_keeps_held_pairs_until_a_rival_is_clearly_better(encoder):
    model = _fit(encoder, epochs=1, stickiness=2.0)  # held pairs compete at twice their gate weight
    joint = torch.log(torch.tensor([[0.30, 0.25, 0.20, 0.15, 0.10], [0.30, 0.25, 0.20, 0.15, 0.10]]))
    held = {0: np.array([3, 4]), 1: np.array([3, 4])}
    joint[1, 0] = np.log(0.35)  # row 1's best rival beats even the boosted held pairs
    objective = PairObjective(model, Records(CONTEXTS, REVIEWS), torch.empty(0))
    objective.held = held
    picked = objective.select_pairs(joint, np.array([0, 1]), 2, remember=True)
    assert sorted(picked[0].tolist()) == [0, 3]  # held 3 (2 x 0.15) ties 0.30; held 4 (2 x 0.10) loses to 0
    assert sorted(picked[1].tolist()) == [0, 3]
    assert sorted(held[0].tolist()) == [0, 3]
    model.settings_["stickiness"] = 1.0
    plain = objective.select_pairs(joint, np.array([0, 1]), 2, remember=True)
    assert sorted(plain[0].tolist()) == [0, 1]


def test_stickiness_cuts_fresh_lm_scores_in_later_epochs(encoder):
    def later_epoch_misses(stickiness: float) -> int:
        model = _fit(encoder, epochs=3, stickiness=stickiness, learning_rate=0.01, patience=5)
        return model.history_[-1]["cache_misses"] - model.history_[0]["cache_misses"]

    plain, sticky = later_epoch_misses(1.0), later_epoch_misses(4.0)
    assert sticky < plain, (sticky, plain)


def test_similarity_init_makes_gate_logits_scaled_similarities():
    from popsim.mop.gating import MixtureGate

    emb = torch.nn.functional.normalize(torch.randn(20, 6, generator=torch.Generator().manual_seed(0)), dim=1)
    full = MixtureGate(6, 2, dim=6)
    full.init_similarity(emb, 30.0)
    with torch.no_grad():  # a complete orthonormal basis: x~ . e~ is exactly 30 x the cosine similarity
        assert torch.allclose(full.W_x(emb) @ full.W_e(emb).T, 30.0 * emb @ emb.T, atol=1e-4)
    reduced = MixtureGate(6, 2, dim=3)
    reduced.init_similarity(emb, 4.0)
    w = reduced.W_x.weight
    assert torch.allclose(w @ w.T, 4.0 * torch.eye(3), atol=1e-4)
    assert torch.equal(reduced.W_e.weight, w) and not reduced.W_g.weight.any()  # pi(x) starts uniform


def test_pair_embedding_mean_keeps_the_context_in_view(encoder):
    from popsim.mop.model import embed_pairs
    from popsim.records import ExemplarPool

    pool = ExemplarPool(["a movie you rate 2/10", "a movie you rate 9/10"],
                        ["long slow film " * 30, "long slow film " * 30], np.array(["a", "b"]))
    joint, mean = embed_pairs(encoder, pool, "joint"), embed_pairs(encoder, pool, "mean")
    assert np.allclose(joint, encoder.encode(pool.texts))
    expected = encoder.encode(pool.inputs) + encoder.encode(pool.outputs)
    assert np.allclose(mean, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-6)
    # the same long response behind two different contexts: joint embeddings nearly coincide, mean ones less
    assert float(mean[0] @ mean[1]) < float(joint[0] @ joint[1])


def test_similarity_init_routes_contexts_to_matching_exemplars(encoder):
    """Before much training, the exemplar gate already prefers exemplars written for a similar context."""
    contexts = [("a glowing, enthusiastic review" if i % 2 else "a harsh, angry complaint") for i in range(40)]
    responses = [("I loved it, wonderful!" if i % 2 else "Terrible, I want a refund.") for i in range(40)]
    records = Records(contexts, responses)
    mass = {}
    for scale in (30.0, 0.0):
        model = MixtureOfPersonas(HashLM(), encoder, n_personas=2, n_exemplars=20, epochs=1, batch_size=8,
                                  gate_init_scale=scale, verbose=False, style=PromptStyle.reviews()).fit(records)
        per_context = []
        for context in contexts[:2]:  # one of each kind: a random gate can favour one kind for both
            same = np.array([c == context for c in model.exemplars_.inputs])
            omega = model.exemplar_weights([context] * 2, [0, 1])
            per_context.append(float(omega[:, same].sum(1).mean()))
        mass[scale] = float(np.mean(per_context))
    assert mass[30.0] > 0.9, mass
    assert mass[30.0] > mass[0.0] + 0.2, mass


def test_temperatures_learn_at_their_own_rate(encoder):
    """tau_k has its own step size: at the projections' rate it would barely leave its initial value."""
    moved = {}
    for tau_lr in (0.003, 0.2):
        model = _fit(encoder, epochs=2, patience=5, tau_learning_rate=tau_lr, learning_rate=0.003)
        moved[tau_lr] = float(np.abs(np.log(model.temperatures_) - np.log(0.6)).max())
    assert moved[0.003] <= 2 * 0.003 * 5 + 1e-6, moved  # Adam moves a parameter by about lr per step
    assert moved[0.2] > 0.1, moved


def test_tau_learning_rate_zero_keeps_the_temperatures_and_still_trains_the_gates(encoder):
    """tau_learning_rate=0: temperatures stay at tau_init exactly; the projections still move."""
    model = _fit(encoder, epochs=2, patience=5, tau_learning_rate=0.0, learning_rate=0.05)
    start = torch.full((len(model.personas_),), float(np.log(0.6))).exp().numpy()  # exp(log 0.6) in float32
    np.testing.assert_array_equal(model.temperatures_, start)
    fresh = _fit(encoder, epochs=1, patience=5, tau_learning_rate=0.0, learning_rate=1e-12)
    assert not torch.allclose(model.gate_.W_x.weight, fresh.gate_.W_x.weight)


def test_mask_answered_keeps_exemplars_that_answer_the_asked_question_out_of_training(encoder):
    """New-question training: a pair may not score a record by copying another respondent's answer to it."""
    from popsim.records import ExemplarPool

    questions = [f"Q: How much do you like topic {t}?" for t in "ABCD"]
    contexts = [f"About you: person {i}.\n{questions[i % 4]}" for i in range(40)]
    records = Records(contexts, ["a lot" if i % 3 else "not at all" for i in range(40)],
                      [("a lot", "not at all")] * 40, groups=np.array([f"r{i}" for i in range(40)]))
    # every exemplar answers A; exemplar j also answers B, C or D (j % 3)
    pool = ExemplarPool([f"person x{j}" for j in range(6)],
                        [f"{questions[0]}\nA: a lot\n{questions[1 + j % 3]}\nA: not at all" for j in range(6)],
                        np.array([f"x{j}" for j in range(6)]))
    fitted = {flag: MixtureOfPersonas(HashLM(), encoder, n_personas=2, epochs=2, batch_size=8, top_m=2,
                                      mask_answered=flag, verbose=False, style=PromptStyle.survey()).fit(records, pool)
              for flag in (False, True)}
    rows = np.arange(len(records))
    mask = PairObjective(fitted[True], records, torch.empty(0)).pair_mask(rows).numpy()
    for i in rows:
        q = i % 4
        if q == 0:  # every exemplar answers A: the row keeps them all rather than none
            assert not mask[i].any()
        else:
            assert mask[i].tolist() == [j % 3 == q - 1 for j in range(6)]
    assert not PairObjective(fitted[False], records, torch.empty(0)).pair_mask(rows).any()
    assert all(np.isfinite(h["train_loss"]) for h in fitted[True].history_)


CHECK_TEXTS = {
    "football": ["The striker scored twice as the home side won the league match.",
                 "A late goal from the midfielder settled the football derby on Saturday.",
                 "The coach praised his defenders after a clean sheet in the cup game.",
                 "Fans sang all through the second half as the team climbed the table.",
                 "The goalkeeper saved a penalty in the final minute of the match.",
                 "Injuries forced the manager to change his starting eleven for the derby."],
    "recipe": ["Knead the bread dough for ten minutes and let it rise in a warm kitchen.",
               "This lemon cake recipe needs butter, sugar, eggs and a little flour.",
               "Simmer the tomato sauce slowly and season it with basil before serving.",
               "Roast the vegetables with olive oil and garlic until they are golden.",
               "Whisk the eggs and cream, then bake the tart for half an hour.",
               "A pinch of salt brings out the sweetness in any cookie recipe."],
    "stocks": ["Shares in the bank fell after its quarterly earnings missed forecasts.",
               "Investors sold technology stocks as bond yields rose on Wall Street.",
               "The central bank kept interest rates unchanged, lifting the stock market.",
               "Oil prices pushed energy shares higher in early trading.",
               "The fund manager moved money from equities into government bonds.",
               "Quarterly profits beat analysts' estimates and the share price jumped."],
}
# What a scripted summariser answers for a cluster whose examples mention the key: the stock-market cluster
# gets a cooking description, the kind of summary that fits another cluster better than its own.
CHECK_SUMMARIES = {"goal": "a football fan who writes about league matches, goals and the team's coach.",
                   "recipe": "a home cook who writes about recipes, baking bread and the kitchen.",
                   "shares": "a home cook who loves baking cakes and roasting vegetables for dinner."}


class _TopicSummariser(HashLM):
    def generate(self, prompts, **kwargs) -> list[str]:
        return [next(s for key, s in CHECK_SUMMARIES.items() if key in self.render(p)) for p in prompts]


@pytest.mark.parametrize("check", [False, True])
def test_persona_check_replaces_a_summary_that_describes_another_cluster(encoder, check):
    from popsim.mop.personas import synthesize_personas

    texts = [t for group in CHECK_TEXTS.values() for t in group]
    personas, labels = synthesize_personas(texts, encoder.encode(texts), n_personas=3, lm=_TopicSummariser(),
                                           examples_per_persona=6, check_encoder=encoder if check else None)
    assert len(set(labels[:6])) == len(set(labels[6:12])) == len(set(labels[12:])) == 1  # one topic per cluster
    stocks = personas[labels[12]]
    kept = [personas[labels[0]], personas[labels[6]]]
    assert all(p.source == "lm" and not p.rejected for p in kept)
    if check:
        assert stocks.source == "fallback" and "cakes" in stocks.rejected
        assert "shares" in stocks.text or "stock" in stocks.text  # described by its own distinctive words
    else:
        assert stocks.source == "lm" and "cakes" in stocks.text


def test_persona_check_on_real_smollm_summaries_keeps_only_summaries_nearest_their_cluster(smollm, encoder,
                                                                                            shared_data):
    """On real reviews, SmolLM2's summaries are often generic; with the check every kept summary sits nearest
    its own cluster's centroid, the rejected ones did not, and the personas fit their clusters at least as
    often as without it."""
    import pandas as pd

    from popsim.mop.personas import synthesize_personas

    frame = pd.read_csv(shared_data / "imdb-reviews-ratings" / "imdb_train_sample2500.csv")
    texts = [" ".join(str(t).split()[:40]) for t in frame["text"].sample(48, random_state=0)]
    emb = encoder.encode(texts)

    def nearest_own(personas, labels) -> np.ndarray:
        cent = np.stack([emb[labels == k].mean(0) for k in range(len(personas))])
        sims = encoder.encode([p.text for p in personas]) @ (cent / np.linalg.norm(cent, axis=1, keepdims=True)).T
        return sims.argmax(1) == np.arange(len(personas))

    plain, labels = synthesize_personas(texts, emb, n_personas=4, lm=smollm)
    checked, labels2 = synthesize_personas(texts, emb, n_personas=4, lm=smollm, check_encoder=encoder)
    assert (labels == labels2).all()
    hits = nearest_own(checked, labels)
    assert all(hits[k] for k, p in enumerate(checked) if p.source == "lm")
    rejected = [k for k, p in enumerate(checked) if p.rejected]
    assert rejected, "expected SmolLM2 to write at least one summary that does not fit its cluster"
    for k in rejected:
        assert checked[k].source == "fallback" and checked[k].rejected == plain[k].text
    assert hits.sum() >= nearest_own(plain, labels).sum()


SCALE = ("too little", "about right", "too much")
SURVEY_CONTEXTS = [f"age: {20 + i % 50}\nQ: Is the country spending too much on item {i % 7}?" for i in range(60)]
# the real answers lean on "too little"; the hash LM has its own fixed lean per prompt
SURVEY_ANSWERS = ["too little" if i % 5 else "about right" for i in range(60)]


def _fit_survey(encoder, **kw):
    params = dict(n_personas=2, n_exemplars=12, epochs=4, batch_size=8, max_train_records=48, verbose=False,
                  style=PromptStyle.survey(), val_fraction=0.0, preset="paper", balance=1.0, stickiness=4.0)
    params.update(kw)
    records = Records(SURVEY_CONTEXTS, SURVEY_ANSWERS, [SCALE] * 60)
    return MixtureOfPersonas(HashLM(), encoder, **params).fit(records), records


def test_offsets_added_to_option_scores_renormalise_the_likelihood():
    cache = ScoreCache(HashLM())
    prompts = ["Q: spending on roads?"] * 3
    raw, _ = pair_log_likelihood(cache, prompts, list(SCALE), [SCALE] * 3, torch.ones(3))
    b = torch.tensor([1.0, -0.5, 0.2], requires_grad=True)
    shifted, _ = pair_log_likelihood(cache, prompts, list(SCALE), [SCALE] * 3, torch.ones(3), offsets=[b] * 3)
    expected = torch.log_softmax(raw.detach() + b.detach(), 0)
    torch.testing.assert_close(shifted.detach(), expected)
    shifted[0].backward()
    assert b.grad is not None and abs(float(b.grad.sum())) < 1e-6  # a constant shift changes nothing
    free, _ = pair_log_likelihood(cache, ["Write a review."], ["fine film"], [None], torch.ones(1), offsets=[None])
    plain, _ = pair_log_likelihood(cache, ["Write a review."], ["fine film"], [None], torch.ones(1))
    torch.testing.assert_close(free, plain)  # free text has no options to shift
    for bad, opts in ((torch.zeros(1), [None]), (torch.zeros(2), [SCALE])):  # offsets a row cannot take
        with pytest.raises(ValueError, match=r"offsets\[0\]"):
            pair_log_likelihood(cache, ["Q?"], [SCALE[0]], opts, torch.ones(1), offsets=[bad])


def test_learned_option_offsets_move_the_likelihood_to_the_real_answers(encoder, tmp_path):
    plain, records = _fit_survey(encoder)
    joint, _ = _fit_survey(encoder, learn_option_offsets=True, offset_learning_rate=0.3)
    assert plain.option_offsets_ == {}
    offsets = joint.option_offsets_[SCALE]
    assert abs(offsets.sum()) < 1e-6 and offsets[0] > offsets[2]  # towards the real "too little"
    ll_plain, _ = plain.log_likelihood(records, n_samples=2)
    ll_joint, _ = joint.log_likelihood(records, n_samples=2)
    assert ll_joint.mean() > ll_plain.mean() + 0.1
    joint.save(tmp_path / "m")
    again = MixtureOfPersonas.load(tmp_path / "m", lm=HashLM(), encoder=encoder)
    np.testing.assert_array_equal(again.option_offsets_[SCALE], offsets)
    np.testing.assert_allclose(again.log_likelihood(records, n_samples=2)[0], ll_joint, rtol=1e-5)


def test_simulation_adds_mops_learned_offsets_to_its_answers_only(encoder):
    import copy

    from popsim.config import QuestionSpec
    from popsim.sim.calibration import OptionBias
    from popsim.sim.model import PopulationModel

    joint, _ = _fit_survey(encoder, learn_option_offsets=True, offset_learning_rate=0.3)
    bare = copy.copy(joint)
    bare.option_offset_params_ = {}  # the same gates, draws and answer streams, without the offsets
    questions = [QuestionSpec(id=f"q{i}", text=f"Is the country spending too much on item {i}?", options=list(SCALE))
                 for i in range(3)]
    profiles = pd.DataFrame({"attr_age": [str(20 + i) for i in range(30)]})
    texts = [f"age: {a}" for a in profiles["attr_age"]]

    def too_little(mop, method: str, bias: OptionBias | None = None) -> float:
        model = PopulationModel(questions=questions, lm=HashLM(), mop=mop, profiles=profiles, profile_texts=texts,
                                method=method, progress=False, option_bias=bias)
        model.step()
        assert (model.mop_option_bias is not None) == (method == "mop" and mop is joint)
        return float((model.responses()["answer"] == "too little").mean())

    with_offsets, without = too_little(joint, "mop"), too_little(bare, "mop")
    assert with_offsets > without + 0.2  # offsets pull answers to the real lean
    assert too_little(joint, "uniform") == too_little(bare, "uniform")  # a baseline never gets them
    # a post-hoc bias on top adds to MoP's own offsets
    assert too_little(joint, "mop", OptionBias({SCALE: np.array([-300.0, 0.0, 0.0])})) == 0


class _PromptRecorder(HashLM):
    """HashLM that keeps the text of every prompt it scores (what training really sent to the LM)."""

    def __init__(self) -> None:
        super().__init__()
        self.scored: list[str] = []

    def score_sketches(self, prompts, continuations):
        self.scored += [self.render(p) for p in prompts]
        return super().score_sketches(prompts, continuations)


def test_training_never_scores_a_record_with_its_own_exemplar(encoder):
    """Through fit's own pair selection: every record is in the pool, and the retrieval-started gate ranks a
    record's own exemplar first (identical text), so only the mask keeps it out of the scored prompts."""
    n = 24
    contexts = [f"<<c{i:03d}>> a film about {'dogs' if i % 2 else 'ships'}" for i in range(n)]
    reviews = [f"<<r{i:03d}>> {'loved the dogs' if i % 2 else 'sea was dull'}" for i in range(n)]
    lm = _PromptRecorder()
    MixtureOfPersonas(lm, encoder, n_personas=2, n_exemplars=n, epochs=2, batch_size=8, max_train_records=n,
                      val_fraction=0.0, top_m=4, gate_init_scale=30.0, verbose=False,
                      style=PromptStyle.reviews()).fit(Records(contexts, reviews))
    training = [t for t in lm.scored if t.count("<<c") == 2]  # exemplar + context: the pair prompts
    assert len(training) >= n
    for text in training:
        own = text.rsplit("<<c", 1)[1][:3]  # the context comes last
        assert f"<<r{own}>>" not in text, text


def test_a_record_with_no_usable_exemplar_is_a_clear_error_not_nan(encoder):
    from popsim.records import ExemplarPool

    records = Records(CONTEXTS[:10], REVIEWS[:10], groups=np.array(["same person"] * 10))
    pool = ExemplarPool(CONTEXTS[:4], REVIEWS[:4], np.array(["same person"] * 4))
    with pytest.raises(DataError, match="no usable exemplar"):
        MixtureOfPersonas(HashLM(), encoder, n_personas=2, epochs=1, verbose=False,
                          style=PromptStyle.reviews()).fit(records, pool)


def test_a_pool_given_without_groups_masks_no_stranger(encoder):
    """Records default to groups "0".."n-1"; a pool without groups must not share those ids (record 0 would
    lose pool member 0 though they are different people), and the user is told nothing can be masked."""
    from popsim.records import ExemplarPool

    records = Records(CONTEXTS[:20], REVIEWS[:20])
    pool = ExemplarPool([f"another film {j}" for j in range(6)], REVIEWS[20:26])
    with pytest.warns(UserWarning, match="no groups"):
        model = MixtureOfPersonas(HashLM(), encoder, n_personas=2, epochs=1, verbose=False,
                                  style=PromptStyle.reviews()).fit(records, pool)
    assert not own_exemplar_mask(records.groups, model.exemplars_.groups).any()
