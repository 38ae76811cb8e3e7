"""Safe files: no pickle, eval/exec or unsafe YAML anywhere in the package; scenario YAML is plain data;
outputs stay inside the run directory; text from data reaches prompts verbatim (never through str.format)."""

from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd
import pytest

from popsim.config import QuestionSpec, load_scenario, validate_scenario
from popsim.data import load_population, render_template, review_records, survey_records
from popsim.exceptions import RunDirectoryError, ScenarioError
from popsim.io import inside
from popsim.lm.testing import HashLM
from popsim.mop.prompts import PromptStyle, build_prompt
from popsim.sim.model import PopulationModel

from .helpers import local_survey, local_survey_config, survey_table

PACKAGE = Path(__file__).resolve().parents[1] / "popsim"
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
UNSAFE_BUILTINS = {"eval", "exec", "compile", "__import__"}
UNSAFE_CALLS = {"yaml.load", "yaml.load_all", "yaml.full_load", "yaml.unsafe_load", "yaml.unsafe_load_all",
                "pd.read_pickle", "pandas.read_pickle"}
UNSAFE_NAMES = {"UnsafeLoader", "FullLoader", "Loader", "read_pickle", "to_pickle"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return _dotted(node.value) + "." + node.attr
    return "?"


def unsafe_uses(source: str, filename: str = "<string>") -> list[str]:
    """Each unsafe construct in ``source`` as 'file:line: what'."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [f"{where}: import {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            found.append(f"{where}: from {node.module} import")
        elif isinstance(node, ast.Attribute) and node.attr in UNSAFE_NAMES and _dotted(node.value) == "yaml":
            found.append(f"{where}: {_dotted(node)}")
        elif isinstance(node, ast.Attribute) and node.attr in {"read_pickle", "to_pickle"}:
            found.append(f"{where}: {_dotted(node)}")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            keywords = {k.arg: k.value for k in node.keywords}
            if isinstance(node.func, ast.Name) and name in UNSAFE_BUILTINS:
                found.append(f"{where}: {name}()")
            elif name in UNSAFE_CALLS:
                found.append(f"{where}: {name}()")
            elif name == "torch.load":
                safe = keywords.get("weights_only")
                if not (isinstance(safe, ast.Constant) and safe.value is True):
                    found.append(f"{where}: torch.load() without weights_only=True")
            elif name in {"np.load", "numpy.load"}:
                allow = keywords.get("allow_pickle")
                if isinstance(allow, ast.Constant) and allow.value is True:
                    found.append(f"{where}: np.load(allow_pickle=True)")
    return found


def test_the_checker_finds_planted_unsafe_code() -> None:
    planted = ("import pickle\nfrom joblib import load\nimport yaml, torch, numpy as np\nyaml.load(s)\n"
               "yaml.load(s, Loader=yaml.FullLoader)\neval('1')\nexec('x=1')\ntorch.load('m.pt')\n"
               "np.load('a.npy', allow_pickle=True)\ndf.to_pickle('x')\n")
    assert len(unsafe_uses(planted)) == 10
    benign = ("import yaml, torch, numpy as np\nyaml.safe_load(s)\nmodel.eval()\n"
              "torch.load('m.pt', weights_only=True)\nnp.load(buf, allow_pickle=False)\n")
    assert unsafe_uses(benign) == []


def test_package_has_no_pickle_eval_or_unsafe_yaml() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    found = [hit for f in files for hit in unsafe_uses(f.read_text(encoding="utf-8"), str(f.relative_to(PACKAGE)))]
    assert found == []


def test_yaml_tags_never_build_python_objects(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\nkind: survey\n")
    with pytest.raises(ScenarioError, match="remove the !! tag"):
        load_scenario(path)
    assert not marker.exists()


def test_outputs_stay_inside_the_run_directory(tmp_path: Path) -> None:
    assert inside(tmp_path, "a/b.csv") == (tmp_path / "a" / "b.csv").resolve()
    for name in ("../escape.csv", "/etc/passwd", "a/../../escape"):
        with pytest.raises(RunDirectoryError, match="escapes the run directory"):
            inside(tmp_path, name)
    (tmp_path / "link").symlink_to(tmp_path.parent)
    with pytest.raises(RunDirectoryError):
        inside(tmp_path, "link/x")
    for name in ("../../etc", "a/b", "..", "", "x\\y"):
        with pytest.raises(ScenarioError, match="`name` must be a plain name"):
            validate_scenario({**local_survey_config(tmp_path / "run"), "name": name})


BRACES = "{0} {__class__} {context} {rating} {examples} %s {{x}}"


def test_braces_in_data_reach_prompts_verbatim(tmp_path: Path) -> None:
    """Attribute labels, question text and answers holding format fields appear in prompts unchanged."""
    frame = survey_table()
    frame["sex"] = [BRACES if i % 2 else "{__class__.__init__.__globals__}" for i in range(len(frame))]
    path = local_survey(tmp_path, lambda c: (c["data"]["attributes"]["sex"].pop("labels"),
                                             c["questions"][0].update(text="Spend on " + BRACES + "?")), frame)
    population = load_population(load_scenario(path))
    records = survey_records(population)
    assert any(BRACES in c for c in records.contexts)
    assert any("Spend on " + BRACES + "?" in c for c in records.contexts)
    assert any("{__class__.__init__.__globals__}" in c for c in records.contexts)
    question = QuestionSpec(id="q", text="Pick " + BRACES, options=[BRACES, "{1}"])
    prompt = build_prompt(BRACES, ("x " + BRACES, "A: " + BRACES), "About you: " + BRACES, PromptStyle.survey())
    assert isinstance(prompt, str) and prompt.count(BRACES) == 3
    chat = build_prompt(BRACES, (BRACES, BRACES), BRACES, PromptStyle.reviews())
    assert HashLM().render(chat).count(BRACES) == 4
    profiles = pd.DataFrame({"attr_sex": [BRACES]})
    model = PopulationModel(questions=[question], lm=HashLM(), mop=None, profiles=profiles,
                            profile_texts=["sex: " + BRACES], method="silicon", progress=False)
    assert model.prompt_for(model.by_id[0], question).count(BRACES) == 2
    model.step()
    assert model.by_id[0].answers[(1, "q")] in {BRACES, "{1}"}


def test_review_context_template_fills_each_placeholder_once(tmp_path: Path) -> None:
    assert render_template("{context} rated {rating}/10 {other}", {"context": "{rating}", "rating": "{0}"}) == \
        "{rating} rated {0}/10 {other}"
    frame = pd.DataFrame({"title": ["Heat {rating}", "Up {0}"] * 5, "stars": [8, 3] * 5,
                          "text": ["A fine {__class__} film", "Slow {context}"] * 5})
    frame.to_csv(tmp_path / "reviews.csv", index=False)
    cfg = {"name": "r", "kind": "reviews", "data": {"source": "reviews.csv"},
           "reviews": {"text_column": "text", "context_column": "title", "rating_column": "stars",
                       "context_template": "the movie {context}, rated {rating}/10"}}
    scenario = validate_scenario({**cfg, "base_dir": str(tmp_path)})
    train, test = review_records(scenario)
    contexts = set(train.contexts) | set(test.contexts)
    assert contexts == {"the movie Heat {rating}, rated 8/10", "the movie Up {0}, rated 3/10"}
    assert set(train.responses) | set(test.responses) == {"A fine {__class__} film", "Slow {context}"}


def test_reviews_with_an_empty_cell_are_left_out_and_whole_ratings_stay_whole(tmp_path: Path) -> None:
    """An empty rating, product or text cell drops that review (pandas 3 kept NaN and crashed the template; pandas
    2 wrote "nan" into prompts); the rating column, read as floats because of its empty cell, prints 4, not 4.0."""
    frame = pd.DataFrame({"product": ["lamp", "chair", None, "desk", "lamp", "chair"] * 3,
                          "stars": [4, None, 5, 2, 4, 5] * 3,
                          "text": ["Bright enough", "Wobbly", "Fine", None, "Good value", "Sturdy"] * 3})
    frame.to_csv(tmp_path / "reviews.csv", index=False)
    cfg = {"name": "r", "kind": "reviews", "data": {"source": "reviews.csv"},
           "reviews": {"text_column": "text", "context_column": "product", "rating_column": "stars",
                       "context_template": "{context}, {rating} stars"}}
    train, test = review_records(validate_scenario({**cfg, "base_dir": str(tmp_path)}))
    assert len(train) + len(test) == 9  # 3 of the 6 rows are complete, each 3 times
    assert set(train.contexts) | set(test.contexts) == {"lamp, 4 stars", "chair, 5 stars"}
    assert set(train.responses) | set(test.responses) == {"Bright enough", "Good value", "Sturdy"}
