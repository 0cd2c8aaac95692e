"""Renderers for the audit report: HTML, Markdown, JSON and text, from one model.

HTML and Markdown come from jinja2 templates with autoescaping (HTML) and
StrictUndefined, so a missing field is an error rather than an empty cell.
The HTML is self-contained (inline CSS, no scripts, no external assets).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import jinja2

from enclave_audit.model.report import AuditReport
from enclave_audit.templating import environment


class Format(StrEnum):
    HTML = "html"
    MARKDOWN = "markdown"
    JSON = "json"
    TEXT = "text"

    @property
    def suffix(self) -> str:
        return {"html": ".html", "markdown": ".md", "json": ".json", "text": ".txt"}[self.value]


def _environment(autoescape: bool) -> jinja2.Environment:
    return environment(Path(__file__).with_name("templates"), autoescape=autoescape, compact=False)


def render(report: AuditReport, fmt: Format) -> str:
    match fmt:
        case Format.JSON:
            return report.to_json()
        case Format.HTML:
            return _environment(True).get_template("report.html.j2").render(report=report)
        case Format.MARKDOWN:
            return _environment(False).get_template("report.md.j2").render(report=report)
        case Format.TEXT:
            return render_text(report)


def render_text(report: AuditReport) -> str:
    lines = [f"{report.title}: {report.verdict.value}", report.summary, ""]
    if report.pcr_table:
        mismatches = report.pcr_mismatches()
        for index in report.pcr_indices():
            flag = "  <-- differs" if index in mismatches else ""
            lines.append(f"PCR{index}{flag}")
            for row in report.pcr_table:
                lines.append(f"  {row.source:<28} {row.value(index) or '-'}")
    if report.gate:
        lines += ["", f"gate: {report.gate.decision}: {report.gate.reason}"]
    if report.policy_diff:
        lines += ["", report.policy_diff.rstrip()]
    return "\n".join(lines) + "\n"


__all__ = ["Format", "render", "render_text"]
