"""Benchmark and evaluation reports: one JSON file with every figure plus a markdown summary beside it.

Both carry the command line that produced them, the machine (CPU, cores, RAM, load average at start and end: the
machine is often shared, and a timing means little without it), the versions of what was measured, the figures
(key/value sections and tables) and the PNGs. ``write_report(report, "out/bench")`` writes ``out/bench.json`` and
``out/bench.md``.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Report", "Table", "finish_report", "load_average", "machine_info", "versions", "write_report"]


def load_average() -> tuple[float, float, float]:
    try:
        return tuple(round(x, 2) for x in os.getloadavg())  # type: ignore[return-value]
    except OSError:
        return (float("nan"),) * 3  # type: ignore[return-value]


def machine_info() -> dict[str, Any]:
    from cmr_fusion_ros.machine import machine_summary

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"summary": machine_summary(), "cores": cores, "hostname": platform.node(),
            "loadavg": list(load_average())}


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return None
    names = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu"), "faiss": ("faiss-cpu", "faiss-gpu", "faiss"),
             "rclpy": ("ros-rclpy",), "opencv": ("opencv-python-headless", "opencv-python")}.get(module, (module,))
    for n in names:
        try:
            return version(n)
        except PackageNotFoundError:
            continue
    return None


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent.parent
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def versions(*extra: str) -> dict[str, str | None]:
    """Python, this package (and its git commit when run from a checkout), numpy and ``extra`` packages."""
    from cmr_fusion_ros import __version__

    out: dict[str, str | None] = {"python": platform.python_version(), "cmr_fusion_ros": __version__,
                                  "git_commit": _git_commit(), "numpy": _version("numpy")}
    for name in extra:
        out[name] = _version(name)
    return out


@dataclass
class Table:
    """A table of figures: ``columns`` names, ``rows`` lists of values (numbers are formatted for markdown)."""

    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "columns": self.columns, "rows": self.rows, "note": self.note}


@dataclass
class Report:
    title: str
    command: str
    machine: dict[str, Any] = field(default_factory=machine_info)
    versions: dict[str, str | None] = field(default_factory=versions)
    started_utc: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    settings: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)  # every number, nested as needed (JSON only)
    tables: list[Table] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)  # the lines the command printed as its verdict
    notes: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)

    def finish(self) -> None:
        """Record the load average at the end."""
        self.machine["loadavg_end"] = list(load_average())

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "command": self.command, "started_utc": self.started_utc,
                "machine": self.machine, "versions": self.versions, "settings": self.settings,
                "summary": self.summary, "figures": self.figures, "tables": [t.to_dict() for t in self.tables],
                "notes": self.notes, "images": self.images}

    def markdown(self, base: Path | None = None) -> str:
        m = self.machine
        lines = [f"# {self.title}", "", "```", f"$ {self.command}", "```", "",
                 f"- machine: {m.get('summary', '')}",
                 f"- load average at start {_la(m.get('loadavg'))}" + (
                     f", at end {_la(m.get('loadavg_end'))}" if m.get("loadavg_end") else ""),
                 f"- started {self.started_utc}",
                 "- versions: " + ", ".join(f"{k} {v}" for k, v in self.versions.items() if v), ""]
        if self.settings:
            lines += ["## Settings", ""] + [f"- {k}: {v}" for k, v in self.settings.items()] + [""]
        if self.summary:
            lines += ["## Result", ""] + [f"    {s}" for s in self.summary] + [""]
        for t in self.tables:
            lines += [f"## {t.title}", "", "| " + " | ".join(t.columns) + " |",
                      "|" + "|".join("---" for _ in t.columns) + "|"]
            lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in t.rows]
            lines += ([""] + [t.note] if t.note else []) + [""]
        if self.notes:
            lines += ["## Notes", ""] + [f"- {n}" for n in self.notes] + [""]
        for img in self.images:
            rel = os.path.relpath(img, base) if base is not None else img
            lines += [f"![{Path(img).name}]({rel})", ""]
        return "\n".join(lines)


def _la(values: Any) -> str:
    return " ".join(f"{v:.2f}" for v in values) if values else "n/a"


def _cell(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def write_report(report: Report, stem: str | Path) -> tuple[Path, Path]:
    """Write ``STEM.json`` and ``STEM.md`` (a ``.json``/``.md`` suffix on ``stem`` is dropped); returns both."""
    stem = Path(stem)
    if stem.suffix in (".json", ".md"):
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    if "loadavg_end" not in report.machine:
        report.finish()
    js, md = stem.with_suffix(".json"), stem.with_suffix(".md")
    js.write_text(json.dumps(report.to_dict(), indent=2, default=_json_default, allow_nan=True) + "\n")
    md.write_text(report.markdown(md.parent) + "\n")
    return js, md


def finish_report(report: Report, plot: str | Path | None, json_stem: str | Path | None,
                  draw: Callable[[Path], None]) -> None:
    """A bench's last step: ``draw(plot)`` the figure into ``plot`` (named in the report) and write the report to
    ``json_stem`` (``write_report``), each when given, printing what was written."""
    if plot:
        draw(Path(plot))
        report.images.append(str(plot))
        print(f"wrote {plot}")
    if json_stem:
        js, md = write_report(report, json_stem)
        print(f"wrote {js}, {md}")
