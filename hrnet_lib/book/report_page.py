"""The reproduction report page: a summary of the run behind the book, made only from its records."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hrnet_lib import viz
from hrnet_lib.book.chapter import (
    comparable,
    model_line,
    read_log,
    recipe_variants,
    repo_path,
    run_provenance,
)
from hrnet_lib.evaluate.report import COLUMNS, PUBLISHED, nme_row, paired_difference


def report_summary(parameters: dict[str, Any]) -> str:
    """Markdown summary of the run behind the book, made only from its records (nothing typed in)."""
    run = repo_path(parameters["run_dir"])
    results_path = run / "results.json"
    with open(results_path, encoding="utf-8") as handle:
        results = json.load(handle)
    trained = run_provenance(run, parameters["data_kind"], parameters["preset"], parameters["data_root"])
    steps, validations = read_log(run)
    best = min(validations, key=lambda record: record["val_nme"], default=None)
    chosen = (
        f"best validation NME {100 * best['val_nme']:.2f}% (epoch {best['epoch'] + 1})"
        if best
        else "no validation hold-out (val_fraction=0): best.pt holds the final weights"
    )
    with open(run / "config.json", encoding="utf-8") as handle:
        info = json.load(handle)
    lines = [
        "## The run behind this book",
        "",
        f"- trained: {viz.provenance(trained)}",
        f"- evaluated: {viz.provenance(trained, results)}",
        f"- data root `{parameters['data_root']}`, run folder `{parameters['run_dir']}`",
        f"- training: `python -m hrnet_lib train {' '.join(info.get('command') or [])}` with "
        f"{info['world_size']} process(es), {steps[-1]['iteration'] if steps else 0} steps of "
        f"{info['config']['global_batch']} images "
        f"over {info['config']['epochs']} epochs; {chosen}, "
        f"median {_median([r['images_per_s'] for r in steps]):.1f} images/s",
        f"- evaluation: `{results['provenance'].get('command', 'python -m hrnet_lib evaluate')}`",
        f"- {_verdict(results['table'])}",
        "",
        "## Result",
        "",
    ]
    rows = [["published HRNetV2-W18 (mmpose)", *(PUBLISHED[c] for c in COLUMNS)]]
    rows.append(nme_row("this run", results["table"]["model"]))
    ours = rows[-1][1:]
    same_recipe = comparable(parameters["data_kind"], parameters["preset"], run)
    differing = ", ".join(
        [f"{parameters['data_kind']} data", f"preset {parameters['preset']}", *recipe_variants(run)]
    )
    if same_recipe:
        differences = (None if v is None else v - PUBLISHED[c] for v, c in zip(ours, COLUMNS, strict=True))
        rows.append(["this run - published", *differences])
    rows.append(nme_row("mean-shape baseline", results["table"]["baseline"]))
    other_rows, intervals = other_evaluations(run, results)
    rows += other_rows
    lines += [
        viz.markdown_table(["NME (%)", *COLUMNS], rows),
        "",
        viz.caption(
            f"NME (%) of this run ({model_line(results)}) beside the published result"
            + (
                "."
                if same_recipe
                else f": not comparable ({differing}); "
                "the mean-shape baseline is the floor that shows what was learnt."
            )
            + intervals,
            trained,
            results,
        ),
        "",
    ]
    return "\n".join(lines) + "\n"


def other_evaluations(run: Path, results: dict[str, Any]) -> tuple[list[list[Any]], str]:
    """Table rows of the run's other evaluations (no flip test, DARK, the released checkpoint) that
    exist, and a sentence on this run's test interval and its paired difference to the released one."""
    rows, intervals = [], ""
    for name, label in (
        ("results-noflip", "this run, no flip test"),
        ("results-dark", "this run, DARK decoder"),
        ("published", "published checkpoint, evaluated here"),
    ):
        path = run / f"{name}.json"
        if path.is_file():
            with open(path, encoding="utf-8") as handle:
                other = json.load(handle)
            rows.append(nme_row(label, other["table"]["model"]))
            if name == "published":
                test = paired_difference(results, other)["test"]
                intervals = (
                    f" On the same {test['faces']} test faces this run minus the released checkpoint is "
                    f"{test['difference']:+.3f} NME points (95% paired bootstrap interval over faces "
                    f"{test['ci95'][0]:+.3f} to {test['ci95'][1]:+.3f})."
                )
    low, high = results["table"]["model"]["test"].get("nme_ci95") or (None, None)
    if low is not None:
        intervals = (
            f" This run's test NME has a 95% bootstrap interval over faces of {low:.2f} to {high:.2f}."
            + intervals
        )
    return rows, intervals


def _verdict(table: dict[str, Any]) -> str:
    """One sentence on what the run learnt: its full-test NME against the mean-shape baseline's."""
    ours = table["model"]["test"]["nme"]
    floor = table["baseline"]["test"]["nme"]
    if ours < floor:
        times = floor / ours
        return f"learnt: test NME {ours:.2f}% is {times:.1f}x below the mean-shape baseline ({floor:.2f}%)"
    return f"not learnt: test NME {ours:.2f}% is not below the mean-shape baseline ({floor:.2f}%)"


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else float("nan")


def write_report_page(path: Path, parameters: dict[str, Any]) -> None:
    """Write the generated part of the reproduction report page (included by book/reproduction.md), its
    paths shown relative to the repository."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(viz.shown_paths(report_summary(parameters)), encoding="utf-8")
