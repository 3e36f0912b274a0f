"""The results tables in the README and docs/results.md are the raw per-run CSVs beside them,
summarised: every mean ± standard deviation (over seeds) and seed count as the CSV gives it."""

import csv
import re
import statistics

import pytest

from conftest import REPO

RESULTS = REPO / "docs" / "results"
HEADER = "| loss | seeds | mIoU | mAcc | mPrecision | aAcc |"
RARE_HEADER = "| loss | pole IoU |"


def runs(split: str, comparison: str = "all_losses") -> dict[str, list[dict]]:
    by_loss: dict[str, list[dict]] = {}
    with open(RESULTS / f"{comparison}_{split}.csv", newline="") as file:
        for row in csv.DictReader(file):
            by_loss.setdefault(row["loss"], []).append(row)
    return by_loss


def summary(rows: list[dict], column: str, digits: int = 2, spread: bool = True) -> str:
    values = [100 * float(row[column]) for row in rows if row[column] not in ("", "nan")]
    if not values:
        return "n/a"
    mean = f"{statistics.fmean(values):.{digits}f}"
    return f"{mean} ± {statistics.stdev(values):.{digits}f}" if spread and len(values) > 1 else mean


def tables(text: str, header: str) -> list[list[list[str]]]:
    """Every markdown table of ``text`` that starts with ``header``: its rows, cells stripped."""
    found = []
    for match in re.finditer(re.escape(header) + r".*\n\|[-|]+\|\n((?:\|.*\|\n?)+)", text):
        found.append([[cell.strip() for cell in line.strip().strip("|").split("|")] for line in match.group(1).splitlines()])
    return found


def expected_row(rows: list[dict], loss: str) -> list[str]:
    return [loss, str(len(rows)), *(summary(rows, column) for column in ("mIoU", "mAcc", "mPrecision", "aAcc"))]


def expected_rare_row(rows: list[dict], loss: str) -> list[str]:
    cells = [loss]
    for name in ("pole", "pedestrian", "traffic sign"):
        recall, precision = (summary(rows, f"{name} {kind}", 1, spread=False) for kind in ("acc", "precision"))
        cells += [summary(rows, f"{name} IoU"), f"{recall} / {precision}"]
    return cells


def results_section(readme: str) -> str:
    return readme.split("\n## Results", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize(
    "where, index, split, comparison",
    [
        ("README.md", 0, "test", "all_losses"),
        ("docs/results.md", 0, "test", "all_losses"),
        ("docs/results.md", 1, "val", "all_losses"),
        ("docs/results.md", 2, "test", "recall_global_ddp"),
    ],
    ids=["README", "results test split", "results validation split", "global-batch statistics"],
)
def test_every_summary_row_is_the_csv_summarised(where, index, split, comparison):
    text = (REPO / where).read_text()
    table = tables(results_section(text) if where == "README.md" else text, HEADER)[index]
    by_loss = runs(split, comparison)
    assert len(table) >= 2
    for row in table:
        assert row == expected_row(by_loss[row[0]], row[0]), f"{where}: {row[0]}"


@pytest.mark.parametrize("index, comparison", [(0, "all_losses"), (1, "recall_global_ddp")])
def test_every_rare_class_row_is_the_csv_summarised(index, comparison):
    table = tables((REPO / "docs" / "results.md").read_text(), RARE_HEADER)[index]
    by_loss = runs("test", comparison)
    assert [row[0] for row in table] == list(by_loss)  # every loss of the comparison, in its order
    for row in table:
        assert row == expected_rare_row(by_loss[row[0]], row[0]), row[0]


@pytest.mark.parametrize("where", ["README.md", "docs/results.md"])
def test_the_test_split_table_has_every_loss_with_three_seeds(where):
    text = (REPO / where).read_text()
    table = tables(results_section(text) if where == "README.md" else text, HEADER)[0]
    assert [row[0] for row in table] == list(runs("test"))
    assert {row[1] for row in table} == {"3"}
