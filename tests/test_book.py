"""The book: the smoke build executes all four notebooks through papermill and builds the offline HTML.

The build runs once per session (module fixture) into a temporary book folder, with its private synthetic
data and training run kept so the pages can be checked against the run's own files.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from hrnet_lib.book import build, chapter, report_page

REPO = Path(__file__).resolve().parents[1]
SEED_COLUMNS = ["NME (%)", "test", "pose", "illumination", "occlusion", "blur", "makeup", "expression"]
PAGES = {
    "intro.html": 0,
    # real and synthetic faces, the warp's three points, augmentation steps, one Gaussian, all targets,
    # flip pairs, mirror
    "generated/01-wflw-data.html": 8,
    "generated/02-hrnetv2-architecture.html": 3,  # architecture, the fusion, stage costs
    "generated/03-multi-gpu-training.html": 2,  # the schedules, the training curves
    # the decoder, the flip test, CED, per-landmark error, best and worst faces
    "generated/04-subset-evaluation.html": 5,
    "reproduction.html": 0,
}
# Library functions each chapter shows (its source, its file and line) and runs at least.
SHOWN = {
    "01-wflw-data": [
        "parse_line",
        "crop_box",
        "warp_matrix",
        "random_augment",
        "encode_heatmaps",
        "flip_landmarks",
    ],
    "02-hrnetv2-architecture": ["BasicBlock", "HighResolutionModule.forward", "HRNet.concat_branches"],
    "03-multi-gpu-training": ["setup_runtime", "EpochSampler", "forward_backward", "lr_at", "run_check"],
    "04-subset-evaluation": ["refine_quarter", "refine_dark", "predict_heatmaps", "flip_back", "nme"],
}


class Page(HTMLParser):
    """What the tests look at in a page: images, scripts, stylesheets, tables and the text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.images: list[str] = []
        self.scripts: list[str] = []
        self.links: list[tuple[str, str]] = []
        self.tables: list[list[list[str]]] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {key: value or "" for key, value in attrs}
        if tag == "img":
            self.images.append(values.get("src", ""))
        elif tag == "script" and "src" in values:
            self.scripts.append(values["src"])
        elif tag == "link":
            self.links.append((values.get("rel", ""), values.get("href", "")))
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self.tables and self.tables[-1]:
            self.tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        self.text.append(data)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Build the smoke book once: its HTML folder, and the work folder with the private data and run."""
    base = tmp_path_factory.mktemp("book")
    work, out = base / "work", base / "book"
    command = [
        sys.executable,
        "-m",
        "hrnet_lib.book",
        "--preset",
        "smoke",
        "--work",
        str(work),
        "--out",
        str(out),
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1200)
    if result.returncode != 0:
        tail = f"{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
        pytest.fail(f"smoke book build failed ({result.returncode}):\n{tail}")
    return {"html": out / "_build" / "html", "run": work / "run", "out": out}


def read(built: dict[str, Path], page: str) -> Page:
    return Page((built["html"] / page).read_text(encoding="utf-8"))


def test_every_page_exists_with_its_figures_embedded(built: dict[str, Path]) -> None:
    html = built["html"]
    for page, figures in PAGES.items():
        path = html / page
        assert path.is_file(), f"missing page {page}"
        parsed = read(built, page)
        pictures = [src for src in parsed.images if "logo" not in src]
        assert len(pictures) >= figures, f"{page}: {len(pictures)} images, expected at least {figures}"
        for src in pictures:
            if src.startswith("data:"):
                assert src.startswith("data:image/"), src[:40]
                continue
            image = (path.parent / src).resolve()
            assert image.is_file(), f"{page}: image {src} not in the build"
            assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{page}: {src} is not a PNG"
            assert image.stat().st_size > 2000, f"{page}: {src} is (nearly) empty"


def test_no_generated_notebook_keeps_an_error_and_parameters_were_injected(built: dict[str, Path]) -> None:
    for name in build.NOTEBOOKS:
        notebook = json.loads((built["out"] / "generated" / f"{name}.ipynb").read_text())
        outputs = [o for cell in notebook["cells"] for o in cell.get("outputs", [])]
        assert not [o for o in outputs if o.get("output_type") == "error"], name
        injected = [c for c in notebook["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
        assert len(injected) == 1 and 'preset = "smoke"' in "".join(injected[0]["source"]), name
        defaults = [c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", [])]
        assert len(defaults) == 1 and "remove-cell" in defaults[0]["metadata"]["tags"], name


def test_evaluation_page_has_the_seed_table_with_this_runs_numbers(built: dict[str, Path]) -> None:
    page = read(built, "generated/04-subset-evaluation.html")
    tables = [t for t in page.tables if t and t[0] == SEED_COLUMNS]
    assert tables, "no table in the model-zoo form on the evaluation page"
    rows = {row[0]: row[1:] for row in tables[0][1:]}
    assert rows["published HRNetV2-W18 (mmpose)"] == ["4.06", "6.97", "3.99", "4.83", "4.58", "3.94", "4.33"]
    results = json.loads((built["run"] / "results.json").read_text())
    model = results["table"]["model"]
    expected = ["-" if model[c]["nme"] is None else f"{model[c]['nme']:.2f}" for c in SEED_COLUMNS[1:]]
    assert rows["this run"] == expected


def test_evaluation_page_sets_the_crop_protocols_side_by_side(built: dict[str, Path]) -> None:
    page = read(built, "generated/04-subset-evaluation.html")
    header = ["crops", *SEED_COLUMNS[1:], "test, faces the detector found", "detector missed"]
    tables = [t for t in page.tables if t and t[0] == header]
    assert tables, "no crop-protocol table on the evaluation page"
    rows = {row[0]: row[1:] for row in tables[0][1:]}
    results = json.loads((built["run"] / "results-crops.json").read_text())
    assert list(rows) == ["landmarks", "rect", "detector"] == list(results["crop_protocols"])
    for name, record in results["crop_protocols"].items():
        nmes = [record["table"][c]["nme"] for c in SEED_COLUMNS[1:]] + [record["nme_detected_faces"]]
        assert rows[name][:-1] == ["-" if v is None else f"{v:.2f}" for v in nmes]
    assert rows["detector"][-1] == str(results["crop_protocols"]["detector"]["missed"])


def test_training_ran_with_two_processes_and_its_curves_come_from_the_log(built: dict[str, Path]) -> None:
    info = json.loads((built["run"] / "config.json").read_text())
    assert info["world_size"] == build.default_nproc("smoke", 0)
    page = read(built, "generated/03-multi-gpu-training.html")
    table = next(t for t in page.tables if t and t[0][:2] == ["setting", "this run"])
    settings = {row[0]: row[1] for row in table[1:]}
    assert settings["processes (world size)"] == str(info["world_size"])
    assert settings["steps per epoch / total"] == f"{info['iters_per_epoch']} / {info['total_iters']}"


def test_captions_state_the_runs_provenance(built: dict[str, Path]) -> None:
    info = json.loads((built["run"] / "config.json").read_text())
    for page in (
        "generated/03-multi-gpu-training.html",
        "generated/04-subset-evaluation.html",
        "reproduction.html",
    ):
        text = " ".join(" ".join(read(built, page).text).split())
        trained = f"trained in {info['precision']}"
        for fact in ("synthetic data", "preset smoke", f"commit {info['commit'][:12]}", "UTC", trained):
            assert fact in text, f"{page}: caption lacks {fact!r}"
        assert f"data checksum {info['data_manifest_sha256'][:12]}" in text, page
    # The data and architecture pages depend on no run: they name the data (page 1) and the commit.
    data_page = " ".join(" ".join(read(built, "generated/01-wflw-data.html").text).split())
    for fact in ("synthetic data in", f"data checksum {info['data_manifest_sha256'][:12]}", "commit "):
        assert fact in data_page, f"data page lacks {fact!r}"
    architecture = " ".join(" ".join(read(built, "generated/02-hrnetv2-architecture.html").text).split())
    assert f"hrnet_lib commit {info['commit'][:12]}" in architecture


def test_html_loads_no_remote_script_or_stylesheet_and_mathjax_is_local(built: dict[str, Path]) -> None:
    html = built["html"]
    mathjax = []
    for path in sorted(html.rglob("*.html")):
        page = Page(path.read_text(encoding="utf-8"))
        hrefs = [href for rel, href in page.links if rel in ("stylesheet", "preload")]
        for url in page.scripts + hrefs:
            assert not url.startswith(("http:", "https:", "//")), f"{path.relative_to(html)} loads {url}"
        mathjax += [
            (path.parent / src.split("?")[0]).resolve() for src in page.scripts if "mathjax" in src.lower()
        ]
    assert mathjax, "no page loads MathJax"
    assert all(p.is_file() for p in mathjax), "a MathJax script is missing from the build"


def test_remote_assets_finds_remote_scripts_and_stylesheets(tmp_path: Path) -> None:
    (tmp_path / "a.html").write_text(
        '<script src="https://cdn.example/x.js"></script><link rel="stylesheet" href="//cdn.example/s.css">'
        '<script src="_static/local.js"></script><a href="https://example.org">a link is fine</a>'
    )
    found = build.remote_assets(tmp_path)
    assert len(found) == 2 and all(line.startswith("a.html: ") for line in found)
    with pytest.raises(build.BookError, match="remote scripts"):
        build.check_offline(tmp_path)


def test_read_log_splits_records_and_names_a_bad_line(tmp_path: Path) -> None:
    lines = [{"iteration": 1, "loss": 0.5}, {"iteration": 2, "epoch": 0, "val_nme": 0.3}, {"iteration": 3}]
    (tmp_path / "log.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    steps, validations = chapter.read_log(tmp_path)
    assert [s["iteration"] for s in steps] == [1, 3] and validations == [lines[1]]
    (tmp_path / "log.jsonl").write_text('{"iteration": 1}\n{not json\n')
    with pytest.raises(ValueError, match="log.jsonl:2"):
        chapter.read_log(tmp_path)


@pytest.mark.parametrize(
    ("config", "variants"),
    [
        ({"loss": "mse", "unbiased": False}, []),
        ({}, []),  # a run from before these switches trained the recipe itself
        ({"loss": "awing", "unbiased": False}, ["loss=awing"]),
        ({"loss": "awing", "unbiased": True}, ["loss=awing", "unbiased=true"]),
    ],
)
def test_only_the_published_recipe_on_wflw_is_set_against_its_row(
    tmp_path: Path, config: dict, variants: list[str]
) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"config": config}))
    assert chapter.recipe_variants(tmp_path) == variants
    assert chapter.comparable("wflw", "wflw-mmpose", tmp_path) == (not variants)
    assert not chapter.comparable("synthetic", "wflw-mmpose", tmp_path)
    assert not chapter.comparable("wflw", "cpu-default")


def test_report_of_a_run_without_hold_out_says_so(tmp_path: Path) -> None:
    """val_fraction=0: no validation record, so the report names the final weights instead of a best epoch."""
    from hrnet_lib.data.synthetic import synthesize
    from hrnet_lib.evaluate import report
    from hrnet_lib.train import loop

    data, run = tmp_path / "data", tmp_path / "run"
    synthesize(data, n_train=12, n_test=4, seed=0, progress=False)
    args = ["--preset", "smoke", "--data-root", str(data), "--out", str(run), "val_fraction=0", "epochs=1"]
    assert loop.main(args) == 0
    evaluate = ["--checkpoint", str(run / "best.pt"), "--data-root", str(data), "--device", "cpu", "--quiet"]
    assert report.main([*evaluate, "--out", str(run / "results.json")]) == 0
    parameters = {"run_dir": str(run), "data_kind": "synthetic", "preset": "smoke", "data_root": str(data)}
    summary = report_page.report_summary(parameters)
    assert "no validation hold-out (val_fraction=0): best.pt holds the final weights" in summary
    assert "95% bootstrap interval over faces" in summary


def test_smoke_parameters_use_the_private_work_folder(tmp_path: Path) -> None:
    parameters = build.notebook_parameters("smoke", "runs/x", "data/WFLW", "wflw", 2, tmp_path)
    assert parameters["data_root"] == str(tmp_path / "data") and parameters["run_dir"] == str(
        tmp_path / "run"
    )
    assert parameters["data_kind"] == "synthetic" and parameters["nproc"] == 2
    assert chapter.repo_path("runs/x") == REPO / "runs" / "x" and chapter.repo_path(tmp_path) == tmp_path
    assert not chapter.run_finished(tmp_path)
    with pytest.raises(ValueError, match="work folder"):
        build.notebook_parameters("smoke", "runs/x", "data", "synthetic", 2, None)


def test_each_notebook_source_has_one_parameters_cell_with_the_shared_names() -> None:
    import jupytext

    names = None
    for name in build.NOTEBOOKS:
        notebook = jupytext.read(build.NBS / f"{name}.py")
        cells = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(cells) == 1, name
        assigned = [line.split("=")[0].strip() for line in cells[0].source.splitlines() if "=" in line]
        assert names is None or assigned == names, name
        names = assigned
    assert set(build.notebook_parameters("smoke", "r", "d", "synthetic", 2, Path("w"))) == set(names or [])


def test_stream_keeps_the_output_out_and_reports_failures(capsys: pytest.CaptureFixture[str]) -> None:
    script = "import sys; sys.stdout.write('10%\\r20%\\r30%\\rdone\\n')"
    chapter.stream([sys.executable, "-c", script])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"$ python -c {script}" and len(lines) == 2
    assert re.fullmatch(r"  done in \d+ s", lines[1])
    script = "import sys; print('step 1'); print('bad input', file=sys.stderr); sys.exit(3)"
    with pytest.raises(chapter.CommandError, match=r"status 3; its last output:\nstep 1\nbad input"):
        chapter.stream([sys.executable, "-c", script])


def test_stream_shows_the_latest_line_of_a_long_command(capsys: pytest.CaptureFixture[str]) -> None:
    """With `every=0` each read of output shows its latest line: never an earlier one after a later one."""
    script = "import sys, time\nfor i in (1, 2, 3):\n    print('step', i, flush=True); time.sleep(0.1)"
    chapter.stream([sys.executable, "-c", script], every=0)
    progress = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  ... ")]
    assert progress and progress[-1] == "  ... step 3"
    # A read that ends mid-line shows the same latest line again; never an earlier one after a later one.
    assert progress == sorted(progress) and set(progress) <= {f"  ... step {i}" for i in (1, 2, 3)}


def test_shown_command_names_python_and_torchrun_and_relative_paths() -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [torchrun, "--nproc_per_node=2", "-m", "hrnet_lib", "train", "--out", REPO / "runs" / "a"]
    assert chapter.shown_command(command) == "torchrun --nproc_per_node=2 -m hrnet_lib train --out runs/a"
    command = [sys.executable, "-m", "hrnet_lib", "evaluate", "--data-root", "/tmp/xyz/work/data"]
    assert chapter.shown_command(command) == "python -m hrnet_lib evaluate --data-root …/work/data"


def test_each_shown_source_is_followed_by_a_cell_that_runs_it() -> None:
    """In every notebook a cell that shows library source is followed by a code cell (its example), and
    each chapter shows the functions it is about."""
    import jupytext

    for name in build.NOTEBOOKS:
        cells = jupytext.read(build.NBS / f"{name}.py").cells
        shown = [i for i, cell in enumerate(cells) if "viz.show_source(" in cell.source]
        assert shown, name
        for i in shown:
            assert i + 1 < len(cells) and cells[i + 1].cell_type == "code", f"{name}: cell {i}"
            assert "show_source" not in cells[i + 1].source, f"{name}: cell {i + 1} only shows more source"
        source = "\n".join(cells[i].source for i in shown)
        for function in SHOWN[name]:
            assert re.search(rf"\b{re.escape(function)}\b", source), f"{name} does not show {function}"


def test_pages_show_the_library_source_with_file_and_line(built: dict[str, Path]) -> None:
    for name, functions in SHOWN.items():
        text = " ".join(" ".join(read(built, f"generated/{name}.html").text).split())
        for function in functions:
            pattern = rf"{re.escape(function)} in hrnet_lib/[\w/]+\.py ?, line \d+:"
            assert re.search(pattern, text), (
                name,
                function,
            )


def test_outputs_and_captions_show_no_path_of_the_building_machine(built: dict[str, Path]) -> None:
    """Paths are shown relative to the repository: no temporary folder, repository root or interpreter."""
    forbidden = [str(built["run"].parent), str(REPO), sys.executable, "/tmp/"]
    for name in build.NOTEBOOKS:
        notebook = json.loads((built["out"] / "generated" / f"{name}.ipynb").read_text())
        for cell in notebook["cells"]:
            for output in cell.get("outputs", []):
                text = "".join(output.get("text", "")) + "".join(
                    output.get("data", {}).get("text/markdown", "")
                )
                for path in forbidden:
                    assert path not in text, f"{name}: {path} in {text[:300]}"
    page = (built["html"] / "reproduction.html").read_text()
    assert not [path for path in forbidden if path in page]


def test_multi_gpu_chapter_runs_the_ddp_check_live(built: dict[str, Path]) -> None:
    page = read(built, "generated/03-multi-gpu-training.html")
    table = next(t for t in page.tables if t and t[0][:2] == ["processes", "device"])
    header, rows = table[0], {row[0]: row for row in table[1:]}
    assert set(rows) >= {"1", "2"}
    difference = float(rows["2"][header.index("largest weight difference to 1 process")])
    change = float(rows["2"][header.index("largest weight change")])
    assert difference < 1e-5 < 1e-4 < change
    assert float(rows["1"][header.index("s / step")]) > 0 and float(rows["2"][header.index("s / step")]) > 0
    assert (built["run"].parent / "ddp-check" / "cpu" / "2-process" / "last.pt").is_file()
