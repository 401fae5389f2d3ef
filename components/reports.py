"""Small human-readable reports the components attach to their artifacts (HTML for validation,
Markdown for the gate). Pure functions of the step's result objects, so they are tested directly."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any


def _field(obj: Any, name: str, default: Any = None) -> Any:
    """obj.name or obj[name]: results come as dataclasses or as dicts."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def validation_html(result: Any, data: str) -> str:
    """An HTML page for a ValidationResult: verdict, counts, failed expectations, where the details are."""
    passed = bool(_field(result, "passed"))
    verdict = "passed" if passed else "FAILED"
    rows = [("dataset", data), ("rows", _field(result, "total")), ("validated", _field(result, "validated")),
            ("rejected", _field(result, "rejected")),
            ("rejected fraction", f"{float(_field(result, 'rejected_fraction', 0.0)):.4f}"),
            ("validated manifest", _field(result, "validated_manifest")),
            ("rejected manifest", _field(result, "rejected_manifest")),
            ("Great Expectations data docs", _field(result, "data_docs"))]
    failed = _field(result, "failed_expectations") or []
    table = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    items = "".join(f"<li><code>{html.escape(str(f))}</code></li>" for f in failed) or "<li>none</li>"
    summary = html.escape(str(_field(result, "summary", "")))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Validation {verdict}</title></head><body>"
            f"<h1>Validation {verdict}</h1><p>{summary}</p><table>{table}</table>"
            f"<h2>Failed expectations</h2><ul>{items}</ul></body></html>\n")


def gate_markdown(decision: Any) -> str:
    """A Markdown note for a GateDecision: promoted or not, why, and the compared rows."""
    promoted = bool(_field(decision, "promoted"))
    lines = [f"# Gate: {'promoted' if promoted else 'not promoted'}", "",
             f"- challenger: {_field(decision, 'challenger')}",
             f"- champion before: {_field(decision, 'champion_before') or 'none'}", "", "## Reasons", ""]
    lines += [f"- {r}" for r in (_field(decision, "reasons") or ["none given"])]
    rows: Sequence[Mapping[str, Any]] = _field(decision, "rows") or []
    if rows:
        cols = list(rows[0].keys())
        lines += ["", "## Comparison", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_cell(row.get(c)) for c in cols) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)
