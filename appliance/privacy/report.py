"""The data steward's report of a screen: one self-contained HTML page and the same content as JSON.

The page opens offline (inline CSS and SVG, no script, no external asset).
It never shows real text: quarantined notes appear as a short excerpt of the
*synthetic* note with every offending span masked, digits masked in the
context, and real records referred to by a keyed alias only.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from appliance.privacy.detectors import Finding, by_name
from appliance.privacy.reference import ReferenceIndex
from appliance.security.crypto import atomic_write
from appliance.workspace import Workspace

CONTEXT_CHARS = 24
_DIGIT = re.compile(r"\d")


def record_alias(index: ReferenceIndex, record: int | None) -> str | None:
    """A stable keyed alias of a real record (the steward can look it up; nobody else can)."""
    if record is None or record < 0:
        return None
    h = index.hasher.one("\0record:" + index.record_ids[record])
    return f"R-{h & 0xFFFFFFFF:08x}"


def _mask(text: str, spans: Sequence[tuple[int, int]]) -> str:
    out, pos = [], 0
    for s, e in sorted(spans):
        if e <= pos:
            continue
        s = max(s, pos)
        out.append(_DIGIT.sub("#", text[pos:s]))
        out.append("▒" * min(e - s, 6))
        pos = e
    out.append(_DIGIT.sub("#", text[pos:]))
    return "".join(out)


def masked_findings(
    text: str, findings: Sequence[Finding], index: ReferenceIndex, ws: Workspace
) -> list[dict[str, Any]]:
    """Findings as the report shows them: reason, scores, and a masked excerpt around the span."""
    spans = [(f.start, f.end) for f in findings if f.end > f.start]
    out = []
    for f in findings:
        item: dict[str, Any] = {
            "detector": f.detector,
            "reason": f.reason,
            "score": round(f.score, 4),
            "quarantine": f.quarantine,
        }
        if f.kind:
            item["kind"] = f.kind
        alias = record_alias(index, f.record)
        if alias:
            item["record"] = alias
        if f.end > f.start:
            lo = max(0, f.start - CONTEXT_CHARS)
            hi = min(len(text), f.end + CONTEXT_CHARS)
            before = _mask(text[lo : f.start], [(s - lo, e - lo) for s, e in spans if s < f.start])
            after = _mask(text[f.end : hi], [(s - f.end, e - f.end) for s, e in spans if e > f.end])
            label = f.kind or f.detector
            item["excerpt"] = (
                ("…" if lo > 0 else "")
                + " ".join(before.split())
                + f" [{label} masked, {f.end - f.start} chars] "
                + " ".join(after.split())
                + ("…" if hi < len(text) else "")
            )
            item["chars"] = [f.start, f.end]
        else:
            item["excerpt"] = "(the whole note; not shown)"
        out.append(item)
    return out


# --------------------------------------------------------------------------- plots


def _histogram_svg(
    values: Sequence[float],
    *,
    threshold: float | None = None,
    baseline: Sequence[float] | None = None,
    log_hint: str = "",
    width: int = 420,
    height: int = 150,
) -> str:
    if not values and not baseline:
        return '<p class="muted">no values</p>'
    allv = list(values) + list(baseline or [])
    lo, hi = float(min(allv)), float(max(allv))
    if threshold is not None and np.isfinite(threshold):
        lo, hi = min(lo, threshold), max(hi, threshold)
    if hi <= lo:
        hi = lo + 1.0
    bins = 24
    edges = np.linspace(lo, hi, bins + 1)
    series = [(np.histogram(values, edges)[0] / max(1, len(values)), "#3b6ea5", "synthetic")]
    if baseline:
        series.append(
            (np.histogram(baseline, edges)[0] / max(1, len(baseline)), "#d08c2c", "held-out real")
        )
    top = max(float(s[0].max()) for s in series) or 1.0
    pad, ph = 30, height - 40
    bw = (width - 2 * pad) / bins
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">'
    ]
    for k, (hist, color, _) in enumerate(series):
        for i, v in enumerate(hist.tolist()):
            h = ph * v / top
            x = pad + i * bw + (bw / 2 if k else 0)
            parts.append(
                f'<rect x="{x:.1f}" y="{10 + ph - h:.1f}" width="{bw / len(series):.1f}" '
                f'height="{h:.1f}" fill="{color}" opacity="0.85"/>'
            )
    parts.append(
        f'<line x1="{pad}" y1="{10 + ph}" x2="{width - pad}" y2="{10 + ph}" stroke="#555"/>'
    )
    if threshold is not None and np.isfinite(threshold):
        x = pad + (threshold - lo) / (hi - lo) * (width - 2 * pad)
        parts.append(
            f'<line x1="{x:.1f}" y1="6" x2="{x:.1f}" y2="{10 + ph}" stroke="#c0392b" '
            'stroke-dasharray="4 3" stroke-width="2"/>'
        )
    parts.append(
        f'<text x="{pad}" y="{height - 12}" font-size="11">{lo:.3g}</text>'
        f'<text x="{width - pad}" y="{height - 12}" font-size="11" text-anchor="end">{hi:.3g}</text>'
    )
    legend = " · ".join(f'<tspan fill="{c}">■</tspan> {html.escape(n)}' for _, c, n in series) + (
        ' · <tspan fill="#c0392b">┆</tspan> threshold' if threshold is not None else ""
    )
    parts.append(
        f'<text x="{width / 2:.0f}" y="{height - 12}" font-size="11" text-anchor="middle">{legend}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------- page

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Leakage screen: {{ r.source }}</title>
<style>
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#222;line-height:1.45;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%;font-size:.9rem}td,th{border-bottom:1px solid #eee;padding:.3rem .5rem;text-align:left;vertical-align:top}
.cards{display:flex;gap:1rem;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:6px;padding:.6rem 1rem;min-width:9rem}
.card b{font-size:1.6rem;display:block}.ok{color:#1e7b34}.bad{color:#b03a2e}.muted{color:#777}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(440px,1fr));gap:1rem}
code,.excerpt{font-family:ui-monospace,Menlo,monospace;font-size:.85rem}.excerpt{background:#f6f6f6;padding:.1rem .3rem}
</style></head><body>
<h1>Leakage screen — {{ r.source }}</h1>
<p class="muted">Created {{ r.created }} · policy <code>{{ r.policy.path }}</code> sha256 <code>{{ r.policy.sha256[:16] }}</code>
· reference: {{ r.index.records }} real notes ({{ r.index.holdout_records }} held out) · {{ r.seconds }} s</p>
<div class="cards">
<div class="card">screened<b>{{ r.counts.screened }}</b></div>
<div class="card ok">released<b>{{ r.counts.released }}</b></div>
<div class="card bad">quarantined<b>{{ r.counts.quarantined }}</b></div>
<div class="card">rejected<b>{{ r.counts.rejected }}</b></div>
</div>

<h2>Detectors and thresholds</h2>
<table><tr><th>detector</th><th>what it measures</th><th>threshold (policy)</th><th>notes quarantined</th><th>scores (median / p95 / max)</th></tr>
{% for name, d in r.detectors.items() %}<tr><td><b>{{ name }}</b></td><td>{{ d.description }}</td><td>{{ thresholds.get(name, "") }}</td>
<td>{{ d.quarantined }}</td><td>{% if d.scores.count %}{{ d.scores.median }} / {{ d.scores.p95 }} / {{ d.scores.max }}{% else %}<span class="muted">n/a</span>{% endif %}</td></tr>
{% endfor %}</table>
{% for note in notes %}{{ note | safe }}{% endfor %}

<h2>Distributions</h2>
<div class="grid">{% for name, svg in plots %}<div><b>{{ name }}</b><br>{{ svg | safe }}</div>{% endfor %}</div>

{% if r.canaries %}<h2>Canary exposure</h2>
<p>Random secrets planted in the generator's training data; exposure = log2(candidates) − log2(rank of the true secret). Above {{ r.policy.leakage.canary_exposure_max_bits }} bits the generator is memorizing.</p>
<table><tr><th>canary</th><th>repeats</th><th>rank</th><th>candidates</th><th>exposure (bits)</th><th></th></tr>
{% for c in r.canaries %}<tr><td>#{{ loop.index }}</td><td>{{ c.repeats }}</td><td>{{ c.rank }}</td><td>{{ c.candidates }}</td><td>{{ c.exposure_bits }}</td>
<td>{% if c.exposure_bits > r.policy.leakage.canary_exposure_max_bits %}<b class="bad">memorized</b>{% else %}<span class="ok">ok</span>{% endif %}</td></tr>{% endfor %}</table>{% endif %}

<h2>Quarantined notes{% if r.quarantined|length > shown|length %} (first {{ shown|length }} of {{ r.quarantined|length }}; all in the JSON){% endif %}</h2>
{% if not shown %}<p class="ok">None.</p>{% else %}
<table><tr><th>note</th><th>detector</th><th>reason</th><th>masked excerpt (synthetic note)</th><th>real record</th></tr>
{% for q in shown %}{% for f in q.findings if f.quarantine %}<tr><td><code>{{ q.id }}</code></td><td>{{ f.detector }}</td><td>{{ f.reason }}</td>
<td><span class="excerpt">{{ f.excerpt }}</span></td><td><code>{{ f.get("record", "") }}</code></td></tr>{% endfor %}{% endfor %}</table>{% endif %}

{% if r.rejected %}<h2>Rejected inputs</h2><table><tr><th>note</th><th>reason</th></tr>
{% for x in r.rejected[:200] %}<tr><td><code>{{ x.id }}</code></td><td>{{ x.reason }}</td></tr>{% endfor %}</table>{% endif %}

<h2>Policy</h2>
<table>{% for k, v in r.policy.leakage.items() %}<tr><td><code>leakage.{{ k }}</code></td><td>{{ v }}</td></tr>{% endfor %}
<tr><td><code>identifiers.types</code></td><td>{{ r.policy.identifiers.types | join(", ") }}</td></tr>
<tr><td><code>identifiers.quarantine_generic</code></td><td>{{ r.policy.identifiers.quarantine_generic }}</td></tr></table>
<p class="muted">This page shows no real text: offending spans are masked, digits in excerpts are masked, real records appear as keyed aliases.</p>
</body></html>
"""


def render_html(
    report: dict[str, Any],
    scores: dict[str, list[float]],
    index: ReferenceIndex,
    baseline: dict[str, Any] | None = None,
) -> str:
    import jinja2

    # Each detector says how its threshold reads, where its line goes and what held-out
    # real notes scored (a name not in the registry gets none of them).
    thresholds = {name: by_name(name).threshold_text(report) for name in report["detectors"]}
    plots = []
    for name, values in scores.items():
        det = by_name(name)
        held = det.held_out(report, index, baseline or {})
        plots.append(
            (name, _histogram_svg(values, threshold=det.threshold_value(report), baseline=held))
        )
    notes = [note for name in report["detectors"] if (note := by_name(name).html_note(report))]
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(_TEMPLATE).render(
        r=report,
        plots=plots,
        thresholds=thresholds,
        notes=notes,
        shown=report["quarantined"][:500],
    )


def write_report(
    ws: Workspace,
    report: dict[str, Any],
    scores: dict[str, list[float]],
    index: ReferenceIndex,
    baseline: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    stamp = report["created"].replace(":", "").replace("-", "")[:15]
    name = report.get("corpus") or Path(report.get("input") or "input").stem
    base = f"screen-{re.sub(r'[^A-Za-z0-9_.-]', '_', str(name))}-{stamp}"
    body = (json.dumps(report, indent=1, ensure_ascii=False) + "\n").encode()
    page = render_html(report, scores, index, baseline).encode()
    json_path = ws.reports_dir / f"{base}.json"
    html_path = ws.reports_dir / f"{base}.html"
    atomic_write(json_path, body, 0o600)
    atomic_write(html_path, page, 0o600)
    return json_path, html_path
