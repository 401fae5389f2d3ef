"""Small human-readable reports the components attach to their artifacts (HTML for validation,
Markdown for the gate). Pure functions of the step's result objects, so they are tested directly."""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Mapping
from typing import Any


def _field(obj: Any, name: str, default: Any = None) -> Any:
    """obj.name or obj[name]: results come as dataclasses or as dicts."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _failures(result: Any) -> dict[str, dict[str, Any]]:
    """check -> {expectation, reason, count, ids, ...} (a list of names is accepted too)."""
    failed = _field(result, "failed_expectations") or {}
    return dict(failed) if isinstance(failed, Mapping) else {str(name): {} for name in failed}


def failures_line(result: Any, max_ids: int = 3) -> str:
    """One line naming each failed check, how many rows it rejected and the first of them."""
    parts = []
    for check, info in _failures(result).items():
        ids = [str(i) for i in (info.get("ids") or [])]
        shown = ", ".join(ids[:max_ids]) + (", ..." if len(ids) > max_ids else "")
        count = info.get("count", len(ids))
        parts.append(f"{check}: {count} row(s)" + (f" ({shown})" if shown else ""))
    return "; ".join(parts) or "no failed expectations"


def validation_html(result: Any, data: str) -> str:
    """An HTML page for a ValidationResult: verdict, counts, failed expectations, where the details are."""
    passed = bool(_field(result, "passed"))
    verdict = "passed" if passed else "FAILED"
    rows = [("dataset", data), ("rows", _field(result, "total")), ("validated", _field(result, "validated")),
            ("rejected", _field(result, "rejected")),
            ("rejected fraction", f"{float(_field(result, 'rejected_fraction', 0.0)):.4f}"),
            ("summary", _field(result, "summary")),
            ("validated manifest", _field(result, "validated_manifest")),
            ("rejected manifest", _field(result, "rejected_manifest")),
            ("Great Expectations data docs", _field(result, "data_docs"))]
    table = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    items = []
    for check, info in _failures(result).items():
        ids = ", ".join(str(i) for i in (info.get("ids") or [])[:20])
        detail = " - ".join(str(x) for x in (info.get("expectation"), info.get("reason"), info.get("error")) if x)
        items.append(f"<li><b>{html.escape(check)}</b> ({info.get('count', '?')} row(s)): {html.escape(detail)}"
                     f"<br><small>{html.escape(ids)}</small></li>")
    failures = "".join(items) or "<li>none</li>"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Validation {verdict}</title></head><body>"
            f"<h1>Validation {verdict}</h1><p>{html.escape(failures_line(result))}</p><table>{table}</table>"
            f"<h2>Failed expectations</h2><ul>{failures}</ul></body></html>\n")


def gate_markdown(decision: Any) -> str:
    """A Markdown note for a GateDecision: promoted or not, why, and the compared rows."""
    promoted = bool(_field(decision, "promoted"))
    lines = [f"# Gate: {'promoted' if promoted else 'not promoted'}", "",
             f"- challenger: {_field(decision, 'challenger')}",
             f"- champion before: {_field(decision, 'champion_before') or 'none'}", "", "## Reasons", ""]
    lines += [f"- {r}" for r in (_field(decision, "reasons") or ["none given"])]
    rows = [_as_dict(row) for row in (_field(decision, "rows") or [])]
    if rows:
        cols = list(rows[0].keys())
        lines += ["", "## Comparison", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_cell(row.get(c)) for c in cols) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _as_dict(row: Any) -> Mapping[str, Any]:
    """A comparison row: a dict, or a dataclass such as registry.registry.GateRow."""
    return row if isinstance(row, Mapping) else dataclasses.asdict(row)


def _cell(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)
