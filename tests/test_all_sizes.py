"""The all-sizes run's bookkeeping (benchmarks/all_sizes.py and the `worst_values` fixture of
tests/conftest.py): worst values, pytest's summary line, the command, the table."""

from __future__ import annotations

from conftest import WorstValues

from sam2_triton.benchmarks.all_sizes import (
    IMAGE_CASES,
    MEASURES,
    markdown_table,
    pytest_command,
    pytest_counts,
    worse,
)


def test_worse_follows_each_measure():
    assert worse("graph_relative_error", 1e-6, 3e-6) == 3e-6
    assert worse("image_iou", 0.999, 0.995) == 0.995
    assert worse("video_iou", None, 0.98) == 0.98
    values = WorstValues()
    for value in (0.999, 0.991, 0.9995):
        values.record("video_iou", value)
    values.record("graph_relative_error", 2e-6)
    values.record("graph_relative_error", 1e-7)
    assert values.values == {"video_iou": 0.991, "graph_relative_error": 2e-6}
    assert set(values.values) <= set(MEASURES)


def test_pytest_counts_reads_the_summary_line():
    output = "....F.\n=== 1 failed, 26 passed, 2 deselected in 812.31s (0:13:32) ===\n"
    assert pytest_counts(output) == {"failed": 1, "passed": 26, "deselected": 2}
    assert pytest_counts("no summary here") == {}


def test_command_selects_the_image_cases_and_sets_the_frames():
    command, env = pytest_command(video_frames=3)
    selection = command[command.index("-k") + 1]
    assert all(case in selection for case in IMAGE_CASES)
    assert list(env.values()) == ["3"]


def test_table_marks_failures_and_missing_values():
    rows = [
        dict(model="tiny", graph_relative_error=4.2e-6, image_iou=0.999991, video_iou=1.0,
             tests={"passed": 27}, exit_status=0, seconds=300.0),
        dict(model="large", graph_relative_error=5e-5, image_iou=None, video_iou=None,
             tests={"failed": 1, "passed": 20}, exit_status=1, seconds=1200.0),
    ]  # fmt: skip
    table = markdown_table({"rows": rows})
    lines = table.splitlines()
    assert len(lines) == 4
    assert "4.2e-06" in lines[2] and "0.99999" in lines[2] and "27 passed" in lines[2]
    assert "not measured" in lines[3] and "**1 failed, 20 passed**" in lines[3]
