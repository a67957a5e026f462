"""What every benchmark writes: its results as JSON and a PNG plot of them.

A benchmark builds one record (a JSON-able dict) starting from `record_header` (model, machine,
date), then calls `write_report` with the plot function of its kind. Each plot function checks
the fields it needs and raises `ValueError` naming the missing one before anything is saved,
so that no PNG is written from an incomplete record. Plots are drawn with matplotlib's Agg
canvas (no display, no pyplot state); titles name the model, the machine and the date; axes
carry their units.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import textwrap
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

Record = Mapping[str, Any]
PlotFunction = Callable[[Record, Path], Path]

REFERENCE_COLOUR = "#4c72b0"
SERVED_COLOUR = "#dd8452"
DPI = 120


def machine_description() -> str:
    """Processor model, core count, memory and GPU (or "CPU only") of this machine, as every
    benchmark record names it; the GPU is the one torch sees."""
    processor = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        processor = names[0] if names else processor
    except OSError:
        pass
    parts = [processor, f"{os.cpu_count()} cores"]
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        parts.append(f"{memory / 2**30:.0f} GiB")
    except (ValueError, OSError, AttributeError):
        pass
    import torch

    if torch.cuda.is_available():
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        parts.append(", ".join(gpus))
    else:
        parts.append("CPU only")
    parts.append(f"torch {torch.get_num_threads()} threads")
    return ", ".join(parts)


def record_header(
    model: str, weights: str | None = None, machine: str | None = None
) -> dict[str, Any]:
    """The fields every record starts with: model, weights (checkpoint or "random"), machine,
    date (UTC, ISO) and time."""
    now = datetime.now(timezone.utc)
    return {
        "model": model,
        "weights": weights,
        "machine": machine or machine_description(),
        "date": now.date().isoformat(),
        "time_utc": now.strftime("%H:%M"),
    }


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """--json and --plot (default: the JSON's path with the suffix .png)."""
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--plot", type=Path, help="write the plot (PNG) here (default: next to --json, .png)"
    )


def plot_path(json_path: Path | str | None, plot: Path | str | None) -> Path | None:
    """Where the plot goes: `plot` if given, else the JSON's path with .png, else nowhere."""
    if plot is not None:
        return Path(plot)
    return Path(json_path).with_suffix(".png") if json_path is not None else None


def write_report(
    record: Record,
    plot: PlotFunction,
    json_path: Path | str | None,
    png_path: Path | str | None = None,
) -> Path | None:
    """Write `record` as JSON to `json_path` (if given), then its plot to `png_path` (default:
    next to the JSON); returns the PNG's path, or None when neither path is given. The JSON
    comes first, so that the numbers of a long run survive a record the plot refuses."""
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        print(f"results written to {json_path}")
    target = plot_path(json_path, png_path)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        plot(record, target)
        print(f"plot written to {target}")
    return target


def field(record: Any, *keys: str | int, kind: str) -> Any:
    """record[keys[0]][keys[1]]...; ValueError naming the missing field and the record kind."""
    value = record
    for depth, key in enumerate(keys):
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            path = " -> ".join(repr(k) for k in keys[: depth + 1])
            raise ValueError(f"{kind} record lacks required field {path}") from None
    return value


def number(record: Any, *keys: str | int, kind: str) -> float:
    value = field(record, *keys, kind=kind)
    if isinstance(value, bool) or not isinstance(value, int | float):
        path = " -> ".join(repr(k) for k in keys)
        raise ValueError(f"{kind} record field {path} is {value!r}, not a number")
    return float(value)


def _header(record: Record, kind: str) -> tuple[str, str, str]:
    """(model, machine, date) of a record, for the plot's title."""
    model, machine, date = (str(field(record, k, kind=kind)) for k in ("model", "machine", "date"))
    return model, machine, date


def _figure(ncols: int, title: str, header: tuple[str, str, str], width: float = 6.0) -> Figure:
    model, machine, date = header
    figure = Figure(figsize=(width * ncols, 4.8), dpi=DPI, layout="constrained")
    figure.suptitle(f"SAM 2 {model}: {title}\n{machine}, {date}", fontsize=11)
    figure.subplots(1, ncols, squeeze=False)
    return figure


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, format="png")
    return path


def _bars(
    ax: Axes,
    groups: list[str],
    series: Mapping[str, tuple[list[float], list[float] | None]],
    colours: Iterable[str],
    fmt: str = "{:.0f}",
) -> None:
    """Grouped bars: series name -> (heights, upper whisker ends or None) per group, each
    bar labelled with its height."""
    width = 0.8 / len(series)
    for i, ((name, (heights, tops)), colour) in enumerate(zip(series.items(), colours)):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        errors = None
        if tops is not None:
            errors = [[0.0] * len(heights), [max(t - h, 0.0) for h, t in zip(heights, tops)]]
        bars = ax.bar(xs, heights, width, yerr=errors, capsize=4, label=name, color=colour)
        ax.bar_label(
            bars,
            labels=[fmt.format(h) for h in heights],
            label_type="center",
            fontsize=8,
            color="white",
        )
    ax.set_xticks(range(len(groups)), groups)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def plot_networks(record: Record, path: Path) -> Path:
    """benchmarks/networks.py: p50 latency per network (bars, p95 whiskers), ONNX Runtime
    against the official PyTorch module, log scale (the networks span 50x)."""
    kind = "networks"
    header = _header(record, kind)
    networks = field(record, "networks", kind=kind)
    if not networks:
        raise ValueError(f"{kind} record has no networks")
    objects = int(number(record, "objects", kind=kind))
    sides = {"ONNX Runtime": "onnxruntime", "PyTorch (official module)": "pytorch"}
    series = {
        label: (
            [number(networks, n, side, "p50_ms", kind=kind) for n in networks],
            [number(networks, n, side, "p95_ms", kind=kind) for n in networks],
        )
        for label, side in sides.items()
    }
    repeat = record.get("repeat")
    figure = _figure(
        1,
        f"latency per network, {objects} object{'s' if objects != 1 else ''}"
        + (f", {repeat} calls each" if repeat else ""),
        header,
        width=8.0,
    )
    ax = figure.axes[0]
    _bars(ax, list(networks), series, (SERVED_COLOUR, REFERENCE_COLOUR))
    ax.set_yscale("log")
    lowest = min(min(heights) for heights, _ in series.values())
    highest = max(max(tops or heights) for heights, tops in series.values())
    ax.set_ylim(10 ** math.floor(math.log10(lowest / 2)), highest * 6)  # room for the legend
    ax.set_ylabel("latency per call (ms, log scale; bar p50, whisker p95)")
    ax.set_xlabel("network")
    ax.legend(loc="upper left", ncol=2)
    return _save(figure, path)


def plot_memory_attention(record: Record, path: Path) -> Path:
    """benchmarks/memory_attention.py: p50 time per call of each variant against batch size
    (objects), whiskers to p95."""
    kind = "memory_attention"
    header = _header(record, kind)
    batches = field(record, "batches", kind=kind)
    if not batches:
        raise ValueError(f"{kind} record has no batches")
    sizes = sorted(batches, key=int)
    variants = list(field(batches, sizes[0], kind=kind))
    memories = int(number(record, "memories", kind=kind))
    pointers = int(number(record, "pointers", kind=kind))
    repeat = record.get("repeat")
    figure = _figure(
        1,
        f"memory attention, {memories} memories, {pointers} pointers"
        + (f", {repeat} calls each" if repeat else ""),
        header,
        width=7.5,
    )
    ax = figure.axes[0]
    colours = (SERVED_COLOUR, REFERENCE_COLOUR, "#55a868", "#c44e52", "#8172b3", "#937860")
    for variant, colour in zip(variants, colours * len(variants)):
        p50 = [number(batches, b, variant, "p50_ms", kind=kind) for b in sizes]
        p95 = [number(batches, b, variant, "p95_ms", kind=kind) for b in sizes]
        ax.errorbar(
            [int(b) for b in sizes],
            p50,
            yerr=[[0.0] * len(p50), [max(t - h, 0.0) for h, t in zip(p50, p95)]],
            marker="o",
            capsize=4,
            label=variant,
            color=colour,
        )
        for b, h in zip(sizes, p50):
            ax.annotate(
                f"{h:.0f}",
                (int(b), h),
                textcoords="offset points",
                xytext=(6, -12),
                fontsize=8,
                color=colour,
            )
    ax.set_xticks([int(b) for b in sizes])
    ax.set_xlim(int(sizes[0]) - 0.3, int(sizes[-1]) + 0.45)  # room for the last labels
    ax.set_xlabel("batch size (objects tracked together)")
    ax.set_ylabel("time per call (ms; point p50, whisker p95)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    return _save(figure, path)


def plot_image_serving(record: Record, path: Path) -> Path:
    """benchmarks/image_serving.py: one-shot and further-click latency, reference against
    served, bars at p50 with whiskers to p95, one panel each (their scales differ 30x)."""
    kind = "image_serving"
    header = _header(record, kind)
    image = field(record, "image", kind=kind)
    protocol = field(record, "protocol", kind=kind)
    counts = {"one_shot": record.get("repeat"), "click": record.get("click_repeat")}
    panels = {
        "one-shot (encode + click)": "one_shot",
        "further click (image cached)": "click",
    }
    values = {
        title: {
            side: (
                number(record, f"{side}_{key}", "p50_ms", kind=kind),
                number(record, f"{side}_{key}", "p95_ms", kind=kind),
            )
            for side in ("reference", "served")
        }
        for title, key in panels.items()
    }
    figure = _figure(2, f"image segmentation, {image} image, {protocol}", header, width=4.5)
    for ax, (title, sides) in zip(figure.axes, values.items()):
        labels = ["reference\n(SAM2ImagePredictor)", f"served\n(Triton, {protocol})"]
        heights = [sides["reference"][0], sides["served"][0]]
        tops = [sides["reference"][1], sides["served"][1]]
        bars = ax.bar(
            labels,
            heights,
            0.6,
            yerr=[[0.0, 0.0], [max(t - h, 0.0) for h, t in zip(heights, tops)]],
            capsize=6,
            color=(REFERENCE_COLOUR, SERVED_COLOUR),
        )
        ax.bar_label(
            bars,
            labels=[f"{h:.0f}" for h in heights],
            label_type="center",
            fontsize=9,
            color="white",
        )
        count = counts[panels[title]]
        ax.set_title(title + (f", {count} calls each" if count else ""), fontsize=10)
        ax.set_ylabel("latency (ms; bar p50, whisker p95)")
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    return _save(figure, path)


def plot_video_tracking(record: Record, path: Path) -> Path:
    """benchmarks/video_tracking.py: FPS of reference and served tracking against objects per
    video (one sequence) and against sequences (one object each; served concurrently, the
    reference one after another)."""
    kind = "video_tracking"
    header = _header(record, kind)
    cases = field(record, "cases", kind=kind)
    if not cases:
        raise ValueError(f"{kind} record has no cases")
    rows = [
        (
            int(number(case, "objects", kind=kind)),
            int(number(case, "sequences", kind=kind)),
            number(case, "reference_fps", kind=kind),
            number(case, "served_fps", kind=kind),
        )
        for case in cases
    ]
    frames = int(number(record, "frames", kind=kind))
    size = field(record, "size", kind=kind)
    by_objects = sorted({(o, r, s) for o, q, r, s in rows if q == 1})
    by_sequences = sorted({(q, r, s) for o, q, r, s in rows if o == 1})
    panels: list[tuple[str, list[tuple[int, float, float]]]] = []
    if by_objects:
        panels.append(("objects per video (1 sequence)", by_objects))
    if any(q > 1 for q, _, _ in by_sequences):
        panels.append(
            (
                "sequences, 1 object each (served: concurrent\n"
                "clients; reference: one after another)",
                by_sequences,
            )
        )
    repeat = record.get("repeat")
    runs = f", median of {repeat} runs" if repeat and repeat > 1 else ", 1 run" if repeat else ""
    figure = _figure(
        len(panels), f"video tracking, {frames} frames of {size} per video{runs}", header, 5.0
    )
    for ax, (xlabel, points) in zip(figure.axes, panels):
        _bars(
            ax,
            [str(x) for x, _, _ in points],
            {
                "reference (SAM2VideoPredictor)": ([r for _, r, _ in points], None),
                "served (Triton track_video)": ([s for _, _, s in points], None),
            },
            (REFERENCE_COLOUR, SERVED_COLOUR),
            fmt="{:.3f}",
        )
        ax.set_xlabel(xlabel)
        ax.set_ylabel("throughput (frames/s, all sequences)")
        ax.set_ylim(0, max(max(r, s) for _, r, s in points) * 1.25)
        ax.legend(loc="upper right", fontsize=8)
    return _save(figure, path)


PERF_ANALYZER_LATENCIES = ("p50", "p90", "p95", "p99")


def read_perf_analyzer_csv(path: Path | str) -> list[dict[str, float]]:
    """Rows of perf_analyzer's -f CSV: concurrency, throughput (inferences/s) and latency
    percentiles converted from microseconds to milliseconds."""
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            try:
                entry = {
                    "concurrency": int(row["Concurrency"]),
                    "throughput_infer_per_s": float(row["Inferences/Second"]),
                }
                for p in PERF_ANALYZER_LATENCIES:
                    entry[f"{p}_ms"] = float(row[f"{p} latency"]) / 1e3
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{line}: not a perf_analyzer CSV row ({exc})") from None
            rows.append(entry)
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def plot_perf_analyzer(record: Record, path: Path) -> Path:
    """benchmarks/perf_analyzer.py: throughput and p50 / p99 latency against concurrency."""
    kind = "perf_analyzer"
    header = _header(record, kind)
    served_model = field(record, "served_model", kind=kind)
    rows = field(record, "rows", kind=kind)
    if not rows:
        raise ValueError(f"{kind} record has no rows")
    points = sorted(
        (
            int(number(row, "concurrency", kind=kind)),
            number(row, "throughput_infer_per_s", kind=kind),
            number(row, "p50_ms", kind=kind),
            number(row, "p99_ms", kind=kind),
        )
        for row in rows
    )
    unit = "frames" if served_model == "track_video" else "images"
    served = ", ".join(
        str(record[key]) + (" profile" if key == "profile" else "")
        for key in ("profile", "protocol")
        if record.get(key)
    )
    detail = record.get("input", "")
    figure = _figure(
        2,
        f"perf_analyzer on {served_model}"
        + (f" ({served})" if served else "")
        + (f",\n{detail}" if detail else ""),
        header,
        4.8,
    )
    concurrency = [c for c, *_ in points]
    throughput_ax, latency_ax = figure.axes
    throughput_ax.plot(concurrency, [t for _, t, _, _ in points], marker="o", color=SERVED_COLOUR)
    for c, t, _, _ in points:
        throughput_ax.annotate(
            f"{t:.3g}", (c, t), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8
        )
    throughput_ax.set_ylabel(f"throughput (infer/s, 1 inference = 1 {unit[:-1]})")
    throughput_ax.set_ylim(0, max(t for _, t, _, _ in points) * 1.25)
    latency_ax.plot(concurrency, [p for _, _, p, _ in points], marker="o", label="p50")
    latency_ax.plot(concurrency, [p for _, _, _, p in points], marker="s", label="p99")
    latency_ax.set_ylabel("latency per request (ms)")
    latency_ax.set_ylim(0, max(p for *_, p in points) * 1.15)
    latency_ax.legend(loc="upper left")
    for ax in figure.axes:
        ax.set_xlabel("concurrency (requests in flight)")
        ax.set_xticks(concurrency)
        ax.grid(alpha=0.3)
    return _save(figure, path)


def plot_soak(record: Record, path: Path) -> Path:
    """benchmarks/soak.py: the server's resident memory over time (total and the largest
    processes), and latency percentiles per kind of request."""
    kind = "soak"
    header = _header(record, kind)
    samples = field(record, "memory", "samples", kind=kind)
    latency = field(record, "latency", kind=kind)
    if not samples or not latency:
        raise ValueError(f"{kind} record has no memory samples or no latencies")
    minutes = [number(s, "t_s", kind=kind) / 60 for s in samples]
    duration = number(record, "duration_s", kind=kind)
    unexpected = int(number(record, "unexpected", kind=kind))
    figure = _figure(
        2,
        f"soak, {duration / 60:.0f} min, {int(number(record, 'requests', kind=kind))} requests, "
        f"{unexpected} unexpected",
        header,
    )
    memory_ax, latency_ax = figure.axes
    memory_ax.plot(minutes, [number(s, "total_mib", kind=kind) for s in samples], label="total")
    last = field(samples[-1], "by_process_mib", kind=kind)
    for name in sorted(last, key=last.get, reverse=True)[:4]:
        values = [s["by_process_mib"].get(name, 0.0) for s in samples]
        memory_ax.plot(minutes, values, label=name, linewidth=1)
    memory_ax.set_xlabel("time (min)")
    memory_ax.set_ylabel("resident memory (MiB)")
    memory_ax.set_ylim(bottom=0)
    memory_ax.legend(loc="center right", fontsize=8)
    memory_ax.grid(alpha=0.3)
    actions = sorted(latency, reverse=True)  # read top-down in alphabetical order
    rows = range(len(actions))
    for offset, (key, colour) in zip(
        (-0.2, 0.2), (("p50_ms", REFERENCE_COLOUR), ("p99_ms", SERVED_COLOUR))
    ):
        values = [number(latency, a, key, kind=kind) for a in actions]
        latency_ax.barh([r + offset for r in rows], values, 0.4, color=colour, label=key[:3])
    latency_ax.set_yticks(list(rows), actions, fontsize=8)
    latency_ax.set_xscale("log")
    latency_ax.set_xlabel("latency per request (ms, log scale)")
    latency_ax.grid(axis="x", alpha=0.3)
    latency_ax.legend(loc="upper right")
    return _save(figure, path)


LOG_SCALE_SPAN = 20  # a value axis spanning more than this factor is drawn on a log scale
SERIES_COLOURS = (REFERENCE_COLOUR, SERVED_COLOUR, "#55a868", "#c44e52", "#8172b3", "#937860")
SERIES_MARKERS = ("o", "s", "^", "D", "v", "P")


def _lines(
    ax: Axes,
    series: Mapping[str, list[tuple[float, float]]],
    label: Callable[[float], str],
    log: bool = False,
) -> None:
    """One line per series of (x, y) points, each point labelled with `label(y)`."""
    for (name, points), colour, marker in zip(
        series.items(), SERIES_COLOURS * len(series), SERIES_MARKERS * len(series)
    ):
        xs, ys = [x for x, _ in points], [y for _, y in points]
        ax.plot(xs, ys, marker=marker, color=colour, label=name)
        for x, y in points:
            ax.annotate(
                label(y),
                (x, y),
                textcoords="offset points",
                xytext=(5, 4),
                fontsize=7,
                color=colour,
            )
    xs = sorted({x for points in series.values() for x, _ in points})
    if log:
        ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.grid(alpha=0.3)


def plot_orchestration(record: Record, path: Path) -> Path:
    """benchmarks/orchestration.py: the tracker's host milliseconds and device-to-host
    transfers per frame with instant networks, against objects, one line per mode and answer."""
    kind = "orchestration"
    header = _header(record, kind)
    cases = field(record, "cases", kind=kind)
    if not cases:
        raise ValueError(f"{kind} record has no cases")
    timing: dict[str, list[tuple[float, float]]] = {}
    transfers: dict[str, list[tuple[float, float]]] = {}
    devices = set()
    for case in cases:
        name = f"{field(case, 'mode', kind=kind)}, {field(case, 'answer', kind=kind)} answer"
        objects = number(case, "objects", kind=kind)
        devices.add(str(field(case, "device", kind=kind)))
        timing.setdefault(name, []).append((objects, number(case, "host_ms_per_frame", kind=kind)))
        transfers.setdefault(name, []).append(
            (objects, number(case, "transfers_per_frame", kind=kind))
        )
    for series in (timing, transfers):
        for points in series.values():
            points.sort()
    size = record.get("size", "")
    preprocessing = record.get("preprocessing")
    figure = _figure(
        2,
        f"tracker orchestration on {', '.join(sorted(devices))}, instant networks"
        + (f", {size} frames" if size else "")
        + (f", {preprocessing} preprocessing" if preprocessing else ""),
        header,
        width=5.5,
    )
    time_ax, transfer_ax = figure.axes
    _lines(time_ax, timing, "{:.1f}".format, log=True)
    time_ax.set_ylabel("host time per frame (ms, median)")
    time_ax.set_ylim(bottom=0)
    counts = sorted({x for points in transfers.values() for x, _ in points})
    _bars(
        transfer_ax,
        [f"{x:g}" for x in counts],
        {
            name: ([dict(points).get(x, 0.0) for x in counts], None)
            for name, points in transfers.items()
        },
        SERIES_COLOURS,
        fmt="{:g}",
    )
    transfer_ax.set_ylabel("device-to-host transfers per frame")
    transfer_ax.set_ylim(0, max(y for p in transfers.values() for _, y in p) * 1.4 + 1)
    for ax in figure.axes:
        ax.set_xlabel("objects tracked")
        ax.legend(loc="upper left", fontsize=8)
    return _save(figure, path)


def _rate_label(value: float) -> str:
    """A rate with three significant digits, whole numbers from 100 up (no exponents)."""
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def plot_gpu_suite(record: Record, path: Path) -> Path:
    """benchmarks/gpu_suite.py: FPS of each measured system against objects (one video) and
    against videos tracked at once (one object each), on a log scale where the values span
    more than LOG_SCALE_SPAN; the systems not measured are listed under the plot with their
    reason."""
    kind = "gpu_suite"
    header = _header(record, kind)
    systems = field(record, "systems", kind=kind)
    cases = field(record, "cases", kind=kind)
    if not cases:
        raise ValueError(f"{kind} record has no cases")
    by_objects: dict[str, list[tuple[float, float]]] = {}
    by_streams: dict[str, list[tuple[float, float]]] = {}
    for case in cases:
        name = str(field(case, "system", kind=kind))
        label = str(field(systems, name, "label", kind=kind))
        objects = number(case, "objects", kind=kind)
        streams = number(case, "streams", kind=kind)
        fps = number(case, "fps", kind=kind)
        if streams == 1:
            by_objects.setdefault(label, []).append((objects, fps))
        if objects == 1:
            by_streams.setdefault(label, []).append((streams, fps))
    panels = [("objects (one video)", by_objects)]
    if any(x > 1 for points in by_streams.values() for x, _ in points):
        panels.append(("videos tracked at once (one object each)", by_streams))
    for _, series in panels:
        for points in series.values():
            points.sort()
    device = field(record, "device", kind=kind)
    frames = int(number(record, "frames_per_video", kind=kind))
    size = field(record, "size", kind=kind)
    figure = _figure(
        len(panels),
        f"video tracking on {device}, {frames} frames of {size} per video, "
        f"weights {record.get('weights')}",
        header,
        width=6.0,
    )
    for ax, (xlabel, series) in zip(figure.axes, panels):
        _lines(ax, series, _rate_label, log=True)
        ax.set_xlabel(xlabel)
        values = [y for points in series.values() for _, y in points]
        if max(values) > LOG_SCALE_SPAN * min(values):  # systems apart by orders of magnitude
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(ScalarFormatter())
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_ylabel("throughput (frames/s, all videos; log scale)")
        else:
            ax.set_ylim(0, max(values) * 1.2)
            ax.set_ylabel("throughput (frames/s, all videos)")
        ax.legend(loc="best", fontsize=7)
    missing = [
        f"{name}: {entry.get('status', 'not run')}: {entry.get('reason', '')}"
        for name, entry in systems.items()
        if entry.get("status") != "measured"
    ]
    if missing:
        notes = "\n".join(textwrap.shorten(line, 160) for line in missing)
        figure.supxlabel("not measured:\n" + notes, fontsize=7, ha="left", x=0.01)
    return _save(figure, path)


PLOTS: dict[str, PlotFunction] = {
    "gpu_suite": plot_gpu_suite,
    "orchestration": plot_orchestration,
    "networks": plot_networks,
    "memory_attention": plot_memory_attention,
    "image_serving": plot_image_serving,
    "video_tracking": plot_video_tracking,
    "perf_analyzer": plot_perf_analyzer,
    "soak": plot_soak,
}


def main(argv: list[str] | None = None) -> None:
    """Redraw the plot of a saved record: python -m sam2_triton.benchmarks.report KIND JSON."""
    parser = argparse.ArgumentParser(description="Redraw a benchmark's plot from its JSON record.")
    parser.add_argument("kind", choices=sorted(PLOTS))
    parser.add_argument("json", type=Path)
    parser.add_argument("--plot", type=Path, help="default: the JSON's path with .png")
    args = parser.parse_args(argv)
    record = json.loads(args.json.read_text(encoding="utf-8"))
    target = args.plot or args.json.with_suffix(".png")
    PLOTS[args.kind](record, target)
    print(f"plot written to {target}")


if __name__ == "__main__":
    main()
