"""Result tables and the JSON report of every benchmark."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from inpaint_jax import files
from inpaint_jax.benchmarking.reference import AGREEMENT_TOLERANCE

# The figure the GLCIC paper (Iizuka et al. 2017, Table 2) gives for its
# completion network, printed under the inference table for reference.
PAPER_REFERENCE = "GLCIC paper, Table 2: 1024 x 1024 (1,048,576 pixels) in 0.561 s on a GPU"
# The NPS paper's figure, printed under the NPS table for reference.
NPS_REFERENCE = (
    "NPS paper (Yang et al. 2017), released code: about 30 s per 512 x 512 image with a "
    "256 x 256 hole on a GPU"
)


def _format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned text columns, two spaces apart."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip()
        for line in lines
    )


def _mebibytes(count: int | None) -> str:
    return "-" if count is None else f"{count / 2**20:,.0f}"


def _reference_name(rows: Sequence[Mapping[str, Any]]) -> str:
    names = {row["reference"]["name"].split()[0] for row in rows if row.get("reference")}
    return names.pop() if len(names) == 1 else "reference"


def format_inference_table(report: Mapping[str, Any]) -> str:
    """The inference results as the GLCIC paper's timing table (size, pixels, seconds)."""
    rows, other = report["results"], _reference_name(report["results"])
    table = []
    for row in rows:
        reference = row.get("reference")
        agree = ""
        if reference and reference["max_abs_diff"] > AGREEMENT_TOLERANCE:
            agree = " (outputs differ!)"
        table.append(
            [
                row["model"],
                row["dtype"],
                f"{row['height']} x {row['width']}",
                f"{row['pixels']:,}",
                f"{row['seconds']['median']:.3f}",
                f"{row['compile_seconds']:.2f}",
                _mebibytes(row["memory"]["host_peak_increase_bytes"]),
                f"{reference['seconds']['median']:.3f}" if reference else "-",
                f"{row['jax_over_reference']:.2f}" if reference else "-",
                f"{reference['max_abs_diff']:.1e}{agree}" if reference else "-",
            ]
        )
    headers = [
        "model",
        "dtype",
        "image size",
        "pixels",
        "JAX (s)",
        "compile (s)",
        "peak +MiB",
        f"{other} (s)",
        f"JAX/{other}",
        "max |diff|",
    ]
    settings = report["settings"]
    return "\n".join(
        [
            (
                f"Completion latency, batch 1, median of {settings['runs']} runs "
                f"({_machine(report['environment'])})"
            ),
            _format_table(headers, table),
            PAPER_REFERENCE,
        ]
    )


def format_train_table(report: Mapping[str, Any]) -> str:
    """Images/second per device of each case, phase and data mode."""
    rows, other = report["results"], _reference_name(report["results"])
    table = []
    for row in rows:
        reference = row.get("reference")
        table.append(
            [
                row["case"],
                row["phase"],
                row["data"],
                row["dtype"],
                str(row["size"]),
                f"{row['batch_per_device']:g}",
                f"{row['step_seconds']['median']:.3f}",
                f"{row['images_per_second_per_device']:.2f}",
                f"{row['compile_seconds']:.1f}",
                f"{reference['images_per_second']:.2f}" if reference else "-",
                f"{row['jax_over_reference']:.2f}" if reference else "-",
            ]
        )
    headers = [
        "case",
        "phase",
        "data",
        "dtype",
        "size",
        "batch/device",
        "step (s)",
        "images/s/device",
        "compile (s)",
        f"{other} images/s",
        f"JAX/{other} time",
    ]
    settings = report["settings"]
    return "\n".join(
        [
            (
                f"Training step, median of {settings['steps']} steps "
                f"({_machine(report['environment'])})"
            ),
            _format_table(headers, table),
        ]
    )


def format_data_table(report: Mapping[str, Any]) -> str:
    """Input-pipeline images/second per process for each worker count."""
    table = [
        [
            str(row["worker_count"]),
            str(row["batch_per_process"]),
            str(row["crop_size"]),
            f"{row['batch_seconds']['mean']:.3f}",
            f"{row['images_per_second']:.1f}",
        ]
        for row in report["results"]
    ]
    # Batches arrive in bursts (prefetching), so throughput is the mean, not the median.
    headers = ["workers", "batch", "crop", "mean batch (s)", "images/s"]
    first = report["results"][0]
    return "\n".join(
        [
            (
                f"Input pipeline ({first['dataset']}, resize {first['resize_range']}, "
                f"{first['mask']} masks; {_machine(report['environment'])})"
            ),
            _format_table(headers, table),
        ]
    )


def format_nps_table(report: Mapping[str, Any]) -> str:
    """Seconds per stage of NPS on one image: content prediction, each level, in all."""
    row = report["results"][0]

    def line(stage, side, iterations, timings):
        return [
            stage,
            f"{side} x {side}",
            iterations,
            f"{timings['seconds']['median']:.2f}",
            f"{timings['first_call_seconds']:.2f}",
        ]

    table = [line("content", row["content"]["size"], "-", row["content"])]
    table += [
        line(f"level {index}", level["size"], str(level["iterations"]), level)
        for index, level in enumerate(row["levels"], start=1)
    ]
    table.append(line("total", row["image_size"], "", row))
    headers = ["stage", "size", "iterations", "seconds", "first image (s)"]
    hole, runs = row["hole_size"], report["settings"]["runs"]
    compiling = row["compile_seconds"]
    return "\n".join(
        [
            (
                f"Neural patch synthesis, {row['image_size']} x {row['image_size']} image, "
                f"{hole} x {hole} hole, median of {runs} runs ({_machine(report['environment'])})"
            ),
            _format_table(headers, table),
            (
                f"First image: {row['first_call_seconds']:.1f} s, of which "
                + ("- (not reported by JAX)" if compiling is None else f"{compiling:.1f} s")
                + " tracing, lowering and compiling; peak memory "
                f"+{_mebibytes(row['memory']['host_peak_increase_bytes'])} MiB host RSS."
            ),
            NPS_REFERENCE,
        ]
    )


def _machine(env: Mapping[str, Any]) -> str:
    """'2 x cpu (Intel ...), load 1.2, jax 0.10.2' for table titles."""
    device = env["device_kind"] if env["platform"] != "cpu" else env["cpu_model"]
    return (
        f"{env['device_count']} x {env['platform']} ({device}), {env['cpu_count']} cores, "
        f"load {env['load_average'][0]:.1f}, jax {env['jax_version']}"
    )


def build_report(
    benchmark: str,
    settings: Mapping[str, Any],
    results: list[dict[str, Any]],
    started: Mapping[str, Any],
) -> dict[str, Any]:
    """The JSON document of one benchmark run; `started` is `environment()` taken before it."""
    return {
        "benchmark": benchmark,
        "environment": dict(started),
        "load_average_after": list(os.getloadavg()),
        "settings": dict(settings),
        "results": results,
    }


def write_report(report: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Writes `report` as indented JSON to `path`, atomically; returns the path."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    with files.atomic_write(path) as file:
        json.dump(report, file, indent=1)
        file.write("\n")
    return path
