"""MoP training cost: the second epoch vs the first, with the on-disk LM score cache.

Fits ``MixtureOfPersonas`` on the GSS survey records of ``scenarios/survey.yaml`` (its K, N, top-M and
prompt style) with a FRESH score cache in a temporary folder, so epoch 1 pays for every LM score it needs
and epoch 2 reuses them. The cache stores a temperature-free sketch of each (prompt, response) score
(see ``popsim/lm/sketch.py``), so it stays valid while the per-persona temperatures learn; epoch 2 only
pays for the (persona, exemplar) pairs that enter a record's top-M because the gate moved; ``mop.stickiness``
(default 4: a new pair must outweigh a held one 4x) keeps near-ties from swapping pairs every epoch
(``--stickiness 1`` shows plain top-M re-selection).
Also reported: the hit rate of a refit in a new process-like state (same records, warm cache), which is
what a user sees when they rerun a scenario with other gate settings.

Last line::

    RESULT epoch2_speedup=X cache_hit_rate=Y

where ``cache_hit_rate`` is epoch 2's own hit rate (hits / lookups within epoch 2).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from common import load_average, survey_scenario

from popsim.data import load_population, survey_exemplars, survey_records
from popsim.embed import SentenceEncoder
from popsim.lm.hf import HFLanguageModel
from popsim.mop import MixtureOfPersonas, PromptStyle
from popsim.mop.presets import PRESETS
from popsim.runner import mop_estimator

MODEL = "smollm2-135m-instruct"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=None, help="training records (default 320, quick 128)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--stickiness", type=float, default=PRESETS["tuned"]["choice"]["stickiness"],
                    help="top-M hysteresis (default: the tuned preset's, 4; 1 = plain top-M every step)")
    args = ap.parse_args()
    n_records = args.records or (128 if args.quick else 320)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; load average {load_average()}")

    scenario = survey_scenario()
    base = mop_estimator(scenario, None, None)  # the scenario's settings, preset resolved at fit
    population = load_population(scenario)
    records = survey_records(population)
    pool = survey_exemplars(population, base.n_exemplars, n_questions=scenario.mop.exemplar_questions,
                            seed=scenario.seed)
    lm = HFLanguageModel(MODEL)
    encoder = SentenceEncoder()
    with tempfile.TemporaryDirectory() as tmp:
        def fit(epochs: int) -> MixtureOfPersonas:
            model = mop_estimator(scenario, lm, encoder).set_params(
                epochs=epochs, max_train_records=n_records, patience=epochs,
                cache_path=Path(tmp) / "scores.sqlite", style=PromptStyle.survey())
            model.set_params(stickiness=args.stickiness)  # what this benchmark measures, whatever the preset
            return model.fit(records, pool)

        model = fit(2)
        first, second = model.history_[:2]
        hits = second["cache_hits"] - first["cache_hits"]
        lookups = hits + second["cache_misses"] - first["cache_misses"]
        refit = fit(2)
    print(f"lm dtype {lm.dtype}; {model.fit_info_['n_train']} training records, K={len(model.personas_)}, "
          f"N={len(model.exemplars_)}, top-M={model.top_m}, stickiness={model.settings_['stickiness']}")
    print(f"epoch 1: {first['seconds']:7.2f} s   ({first['cache_misses']} LM scores computed)")
    print(f"epoch 2: {second['seconds']:7.2f} s   ({second['cache_misses'] - first['cache_misses']} computed, "
          f"{hits} of {lookups} from the cache)")
    info = refit.fit_info_
    print(f"refit with a warm cache: {info['seconds']:.2f} s, hit rate {info['cache_hit_rate']:.3f}; "
          f"load average {load_average()}")
    print(f"RESULT epoch2_speedup={first['seconds'] / second['seconds']:.2f} "
          f"cache_hit_rate={hits / max(lookups, 1):.3f}")


if __name__ == "__main__":
    main()
