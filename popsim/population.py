"""Whom the agents stand for: draw agent profiles and give each a weight (``population:`` in a scenario).

Three modes (:class:`popsim.population_config.PopulationConfig`):

* ``respondents``: profiles drawn from the held-out respondents by survey weight (today's behaviour);
* ``reweighted``: the held-out respondents are raked to the target margins (weightipy's rim weighting, from
  equal starting weights), agents are drawn by those weights, and the agents themselves are raked to the
  margins so that their weighted shares hit the targets; the held-out respondents keep their raked weights
  for the comparison with real answers;
* ``synthetic``: no respondent rows are used for profiles: every combination of the margins' categories is
  a candidate profile, weighted by raking a table of all combinations from equal weights (the joint that
  meets the margins while adding the least structure, as iterative proportional fitting from a uniform
  seed gives), then drawn and raked as above.

``oversample`` fills every cell of its attributes with at least ``min_agents`` agents and gives each agent
the weight share(cell) * n / agents(cell), so weighted shares stay the population's (with margins, the
cells' shares join the raking as one more margin).
"""

from __future__ import annotations

import contextlib
import io
import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from popsim.config import Scenario
from popsim.data import Population
from popsim.exceptions import DataError
from popsim.population_config import margin_attributes

__all__ = ["AgentDraw", "draw_agents", "rake", "margin_table", "kish_design_effect", "RAKE_TOLERANCE"]

RAKE_TOLERANCE = 0.001
"""Largest gap between a raked share and its target that counts as reached (else: the targets are impossible)."""


@dataclass
class AgentDraw:
    """Agents' attribute columns with a ``weight`` column, and what the weights achieve."""

    profiles: pd.DataFrame  # attr_<name>... and weight (mean 1), one row per agent
    margins: pd.DataFrame  # margin, category, target, achieved, unweighted
    heldout_weights: np.ndarray | None  # the held-out respondents' raked weights (None: their survey weights)
    heldout_note: str = ""  # why the held-out respondents keep their survey weights although margins are set

    @property
    def design_effect(self) -> float:
        return kish_design_effect(self.profiles["weight"].to_numpy(float))

    @property
    def effective_n(self) -> float:
        return len(self.profiles) / self.design_effect

    def summary(self) -> dict:
        """What ``population.json`` records and the run and report print."""
        return {"agents": len(self.profiles), "design_effect": self.design_effect, "effective_n": self.effective_n,
                "margins": self.margins.to_dict("records"), "heldout_raked": self.heldout_weights is not None,
                **({"heldout_note": self.heldout_note} if self.heldout_note else {})}


def kish_design_effect(weights: np.ndarray) -> float:
    """Kish's design effect of unequal weights, n * sum w^2 / (sum w)^2 (1 for equal weights)."""
    w = np.asarray(weights, float)
    return float(len(w) * (w**2).sum() / w.sum() ** 2)


def _key_column(frame: pd.DataFrame, key: str) -> pd.Series:
    """One text column per margin: the category, or the categories of a joint margin joined by ' x '."""
    cols = [frame[f"attr_{a}"].astype(object) for a in margin_attributes(key)]
    missing = np.zeros(len(frame), bool)
    for c in cols:
        missing |= c.isna().to_numpy()
    joined = cols[0].map(str)
    for c in cols[1:]:
        joined = joined + " x " + c.map(str)
    return joined.where(~missing, None)


def _flat_targets(targets: dict[str, dict[tuple[str, ...], float]]) -> dict[str, dict[str, float]]:
    return {key: {" x ".join(cats): share for cats, share in shares.items()} for key, shares in targets.items()}


def rake(frame: pd.DataFrame, targets: dict[str, dict[str, float]], what: str) -> np.ndarray:
    """Weights (mean 1) under which ``frame``'s shares meet every margin in ``targets``.

    ``targets``: {margin key: {category (joint ones joined by ' x '): share}}; ``frame`` has the
    ``attr_*`` columns. Raking is weightipy's rim weighting; a target category no row holds, or targets
    raking cannot meet together (it did not converge), raise a one-line :class:`DataError`.
    """
    import weightipy as wp

    data = pd.DataFrame({f"m{i}": _key_column(frame, key).to_numpy() for i, key in enumerate(targets)})
    for i, (key, shares) in enumerate(targets.items()):
        present = set(data[f"m{i}"].dropna())
        empty = [c for c, s in shares.items() if s > 0 and c not in present]
        if empty:
            raise DataError(f"population.margins.{key}: no {what} is in category '{empty[0]}', so its target "
                            f"cannot be met; raise simulation.agents, add population.oversample by "
                            f"{margin_attributes(key)}, or give it share 0")
    scheme = wp.scheme_from_dict({f"m{i}": {c: 100 * s for c, s in shares.items()}
                                  for i, shares in enumerate(targets.values())}, name="popsim",
                                 rim_params={"convcrit": 1e-10, "max_iterations": 2000})
    with contextlib.redirect_stdout(io.StringIO()):  # weightipy prints its progress and non-convergence
        out = wp.weight_dataframe(data.reset_index(drop=True), scheme, weight_column="__w")
    w = out["__w"].to_numpy(float)
    w = w / w.mean()
    for i, (key, shares) in enumerate(targets.items()):
        got = _shares(data[f"m{i}"], w)
        for cat, share in shares.items():
            if abs(got.get(cat, 0.0) - share) > RAKE_TOLERANCE:
                raise DataError(
                    f"population.margins.{key} cannot be reached: raking the {what}s did not converge (category "
                    f"'{cat}' gets {got.get(cat, 0.0):.3f} against a target of {share:.3f}); make the margins agree "
                    "with each other (a joint margin fixes its attributes' own shares) or drop one")
    return w


def _shares(column: pd.Series, w: np.ndarray) -> dict[str, float]:
    ok = column.notna().to_numpy()
    total = w[ok].sum()
    return {str(c): float(w[ok & (column == c).to_numpy()].sum() / total) for c in column[ok].unique()}


def margin_table(profiles: pd.DataFrame, targets: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Target vs achieved (weighted) share, and the unweighted agent share, per margin and category."""
    w = profiles["weight"].to_numpy(float)
    rows = []
    for key, shares in targets.items():
        column = _key_column(profiles, key)
        got, raw = _shares(column, w), _shares(column, np.ones(len(w)))
        for cat, share in shares.items():
            rows.append({"margin": key, "category": cat, "target": share, "achieved": got.get(cat, 0.0),
                         "unweighted": raw.get(cat, 0.0)})
    return pd.DataFrame(rows, columns=["margin", "category", "target", "achieved", "unweighted"])


def _known_categories(scenario: Scenario, population: Population, name: str) -> list[str]:
    spec = scenario.data.attributes[name]
    values = list((spec.labels or {}).values())
    if spec.bins is not None:
        values += spec.bin_labels or [f"{a:g}-{b:g}" for a, b in zip(spec.bins[:-1], spec.bins[1:], strict=True)]
    values += [str(v) for v in population.respondents[f"attr_{name}"].dropna().unique()]
    return list(dict.fromkeys(values))


def _checked_targets(scenario: Scenario, population: Population) -> dict[str, dict[str, float]]:
    """The margins with every category checked against the attribute's labels and data."""
    assert scenario.population is not None
    targets = scenario.population.targets()
    for key, shares in targets.items():
        names = margin_attributes(key)
        for level, name in enumerate(names):
            known = _known_categories(scenario, population, name)
            for cats in shares:
                if cats[level] not in known:
                    raise DataError(f"population.margins.{key} names category '{cats[level]}' of attribute '{name}', "
                                    f"which it does not have ({', '.join(known[:8])}); use one of those")
    return _flat_targets(targets)


def _synthetic_frame(population: Population, targets: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Every combination of the margins' categories, weighted (from equal weights) to meet the margins."""
    names = list(dict.fromkeys(a for key in targets for a in margin_attributes(key)))
    levels = []
    for name in names:
        seen: dict[str, None] = {}
        for key, shares in targets.items():
            attrs = margin_attributes(key)
            if name in attrs:
                seen.update({cat.split(" x ")[attrs.index(name)]: None for cat, s in shares.items() if s > 0})
        levels.append(list(seen))
    frame = pd.DataFrame(list(itertools.product(*levels)), columns=[f"attr_{n}" for n in names])
    for name in population.attributes:
        if f"attr_{name}" not in frame:
            frame[f"attr_{name}"] = pd.Series([None] * len(frame), dtype=object)
    frame = frame[[f"attr_{n}" for n in population.attributes]]
    frame["weight"] = rake(frame, targets, "combination of categories")
    return frame[frame["weight"] > 1e-9].reset_index(drop=True)


def _in_margins(frame: pd.DataFrame, targets: dict[str, dict[str, float]]) -> np.ndarray:
    """Rows whose categories every margin names (rows with a missing or other category cannot be placed)."""
    ok = np.ones(len(frame), bool)
    for key, shares in targets.items():
        ok &= _key_column(frame, key).isin(list(shares)).to_numpy()
    return ok


def _allocate(shares: pd.Series, n: int, minimum: int) -> pd.Series:
    """Agents per cell: at least ``minimum`` each, the rest in proportion to the cells' population shares."""
    fixed: set = set()
    while True:
        free = [c for c in shares.index if c not in fixed]
        left = n - minimum * len(fixed)
        exact = shares[free] / shares[free].sum() * left
        small = [c for c in free if exact[c] < minimum]
        if not small:
            break
        fixed.update(small)
    counts = np.floor(exact).astype(int)
    rest = left - counts.sum()
    order = (exact - counts).sort_values(ascending=False, kind="stable").index[:rest]
    counts[order] += 1
    return pd.concat([pd.Series(minimum, index=sorted(fixed, key=list(shares.index).index)), counts])[shares.index]


def draw_agents(scenario: Scenario, population: Population, n: int, rng: np.random.Generator) -> AgentDraw:
    """``n`` agents for the scenario's ``population:`` section (see the module docstring), seeded by ``rng``."""
    pop = scenario.population
    assert pop is not None
    targets = _checked_targets(scenario, population) if pop.margins else {}
    attr_cols = [f"attr_{a}" for a in population.attributes]
    heldout_weights, heldout_note = None, ""
    if pop.mode == "synthetic":
        frame = _synthetic_frame(population, targets)
    else:
        frame = population.test[attr_cols + ["weight"]].copy()
        if targets:
            frame = frame[_in_margins(frame, targets)].reset_index(drop=True)
            frame["weight"] = rake(frame, targets, "held-out respondent")
    if targets:
        heldout = population.test
        inside = _in_margins(heldout, targets)
        heldout_weights = np.zeros(len(heldout))
        try:
            heldout_weights[inside] = rake(heldout[inside].reset_index(drop=True), targets, "held-out respondent")
        except DataError as exc:  # synthetic targets the held-out respondents cannot meet
            heldout_weights = None
            heldout_note = (f"the held-out respondents could not be raked to population.margins ({exc}); the report "
                            "compares the agents with them under their survey weights, another population")
    frame = frame[frame["weight"] > 0].reset_index(drop=True)
    if frame.empty:
        raise DataError("no held-out respondent falls in the categories of population.margins; check the margins' "
                        "categories against the data")
    by = [f"attr_{a}" for a in pop.oversample.by] if pop.oversample else []
    cell = _key_column(frame, " x ".join(pop.oversample.by)) if by else pd.Series("all", index=frame.index)
    frame = frame[cell.notna().to_numpy()].reset_index(drop=True)
    cell = cell[cell.notna()].reset_index(drop=True)
    shares = frame.groupby(cell.to_numpy())["weight"].sum()
    shares = shares / shares.sum()
    minimum = pop.oversample.min_agents if pop.oversample else 0
    if minimum * len(shares) > n:
        raise DataError(f"population.oversample puts {minimum} agents in each of {len(shares)} cells of "
                        f"{pop.oversample.by}, more than simulation.agents ({n}); raise simulation.agents to at "
                        f"least {minimum * len(shares)} or lower min_agents")
    counts = _allocate(shares, n, minimum)
    picks, weights = [], []
    for name, k in counts.items():
        rows = np.flatnonzero(cell.to_numpy() == name)
        p = frame["weight"].to_numpy(float)[rows]
        picks.append(rng.choice(rows, size=int(k), replace=k > len(rows), p=p / p.sum()))
        weights.append(np.full(int(k), shares[name] * n / k if k else 0.0))
    idx = np.concatenate(picks)
    profiles = frame.iloc[idx][attr_cols].reset_index(drop=True)
    profiles["weight"] = np.concatenate(weights)
    report_targets = dict(targets)
    if by:
        own = " x ".join(pop.oversample.by)
        if own not in report_targets:
            report_targets[own] = {str(c): float(s) for c, s in shares.items()}
    if targets:
        profiles["weight"] = rake(profiles, report_targets, "agent")
    profiles["weight"] = profiles["weight"] / profiles["weight"].mean()
    if not report_targets:  # plain respondents: report each attribute against the held-out respondents
        real = population.test
        for a in population.attributes:
            col = real[f"attr_{a}"]
            report_targets[a] = _shares(col.astype(object).where(col.notna(), None), real["weight"].to_numpy(float))
    return AgentDraw(profiles, margin_table(profiles, report_targets), heldout_weights, heldout_note)
