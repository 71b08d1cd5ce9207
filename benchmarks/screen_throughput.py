"""Leakage screen throughput: synthetic notes screened against growing real record sets.

For each size of the real record set (default 10k, 30k and 100k demo notes,
``appliance demo-data`` scaled up, one seed) a fresh workspace ingests that
many real notes, builds the reference index (timed separately: it is built
once per record set and reused), then screens the same synthetic set
(default 10,000 demo notes of another seed: other patients, the same
templates) from a JSONL file with ``appliance.privacy.screen.run``. Each
size runs in its own process (ingest, build, calibration), and its screening
in another, so each phase's peak RSS is its own.

Measured per size: ingest, index build, calibration (held-out real notes
through the verbatim/LCS/near-duplicate detectors), screening seconds and
notes/s, peak RSS, and the share of screening time per detector (``needs``
plus ``check``; the k-gram hit table the verbatim and LCS detectors share is
charged to the first that asks for it), decrypting/tokenizing real notes
(``fetch``) and tokenizing/hashing candidates.

Baseline, in the same run: the naive screen, a token LCS of every synthetic
note against every real note (the same bit-parallel ``lcs_length`` the LCS
detector uses, over already-tokenized real notes, so only the pairing is
naive), timed on a few notes against a sample of real notes and extrapolated
linearly to the whole record set.

Usage::

    .venv/bin/python benchmarks/screen_throughput.py --json-out screen-throughput.json
    .venv/bin/python benchmarks/screen_throughput.py --sizes 2000 --synthetic 1000   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_avg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def head_jsonl(src: Path, dest: Path, n: int, skip: int = 0) -> int:
    """Lines ``skip`` to ``skip + n`` of a JSONL export (a smaller export of the same hospital)."""
    written = 0
    with open(src, encoding="utf-8") as fin, open(dest, "w", encoding="utf-8") as fout:
        for i, line in enumerate(fin):
            if i >= skip + n:
                break
            if i >= skip:
                fout.write(line)
                written += 1
    return written


def demo_export(folder: Path, notes: int, seed: int, chunk: int = 10_000) -> None:
    """``notes`` demo notes as one JSONL export, made in chunks of ``chunk`` notes.

    Each chunk is one ``appliance.demo.run`` (its own seed, its own
    patients); note ids get the chunk number so they stay unique. A chunk
    seed the demo generator cannot complete is replaced by the next seed.
    """
    from appliance import demo

    folder.mkdir(parents=True, exist_ok=True)
    part_seed = seed * 1000
    with open(folder / "notes.jsonl", "w", encoding="utf-8") as out:
        for c, start in enumerate(range(0, notes, chunk)):
            n = min(chunk, notes - start)
            while True:
                part = folder / f"part-{c}-{part_seed}"
                try:
                    res = demo.run(part, notes=n, fmt="jsonl", seed=part_seed)
                    break
                except (IndexError, ValueError) as exc:
                    log(f"demo data: seed {part_seed} failed ({exc!r}); trying the next seed")
                    shutil.rmtree(part, ignore_errors=True)
                finally:
                    part_seed += 1
            with open(res.export_path, encoding="utf-8") as fh:
                for line in fh:
                    doc = json.loads(line)
                    doc["note_id"] = f"C{c:02d}-{doc['note_id']}"
                    out.write(json.dumps(doc, ensure_ascii=False) + "\n")
            shutil.rmtree(part, ignore_errors=True)


def candidates_file(export: Path, dest: Path) -> int:
    """A demo export as screen input: JSONL with id and text only."""
    n = 0
    with open(export, encoding="utf-8") as fin, open(dest, "w", encoding="utf-8") as fout:
        for line in fin:
            doc = json.loads(line)
            fout.write(json.dumps({"id": "S" + doc["note_id"], "text": doc["text"]}) + "\n")
            n += 1
    return n


# --------------------------------------------------------------------------- one size (child process)


class Timers:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - t0

        return timed


def instrument(timers: Timers) -> None:
    """Time each detector's needs/check, the index view, the real-note fetch and candidate hashing."""
    from appliance.privacy import detectors, reference, screen

    original = detectors.default_detectors

    def timed_detectors(index: Any, policy: Any) -> list[Any]:
        dets = original(index, policy)
        for d in dets:
            d.needs = timers.wrap(d.name, d.needs)  # type: ignore[method-assign]
            d.check = timers.wrap(d.name, d.check)  # type: ignore[method-assign]
        return dets

    screen.default_detectors = timed_detectors  # type: ignore[assignment]
    screen.Screener._fetch = timers.wrap("fetch real notes", screen.Screener._fetch)  # type: ignore[method-assign]
    # The round's view of the on-disk index: tables read once per round, DCR's pass apart.
    ref = reference.ReferenceIndex
    ref._view_grams = timers.wrap("view: k-gram table", ref._view_grams)  # type: ignore[method-assign]
    ref._view_identifiers = timers.wrap("view: identifier table", ref._view_identifiers)  # type: ignore[method-assign]
    ref._view_bands = timers.wrap("view: bands + signatures", ref._view_bands)  # type: ignore[method-assign]
    ref._view_nearest = timers.wrap("view: dcr nearest notes", ref._view_nearest)  # type: ignore[method-assign]
    screen.Screener.screen = timers.wrap("screen total", screen.Screener.screen)  # type: ignore[method-assign]
    of = detectors.Candidate.of.__func__  # type: ignore[attr-defined]
    detectors.Candidate.of = classmethod(timers.wrap("tokenize candidates", of))  # type: ignore[assignment,method-assign]


def naive_baseline(ws: Any, candidates: Path, notes: int, sample: int, seed: int) -> dict[str, Any]:
    """Pairwise token LCS of ``notes`` synthetic notes against ``sample`` real notes, per note."""
    from appliance.privacy.detectors import lcs_length
    from appliance.privacy.reference import word_tokens
    from appliance.records.ingest import open_store

    store = open_store(ws)
    total = len(store)
    rng = random.Random(seed)
    keep = set(rng.sample(range(total), min(sample, total)))
    real = [word_tokens(r.text) for i, r in enumerate(store) if i in keep]
    with open(candidates, encoding="utf-8") as fh:
        lines = [json.loads(x) for x in fh]
    synth = [word_tokens(d["text"]) for d in rng.sample(lines, min(notes, len(lines)))]
    t0 = time.perf_counter()
    best = []
    for s in synth:
        n = max(1, len(s))
        best.append(max(lcs_length(s, r) / n for r in real))
    seconds = time.perf_counter() - t0
    per_note_sample = seconds / len(synth)
    per_note_full = per_note_sample * total / len(real)
    return {
        "notes": len(synth),
        "real_sample": len(real),
        "seconds": seconds,
        "seconds_per_note_vs_sample": per_note_sample,
        "seconds_per_note_vs_all": per_note_full,
        "extrapolated_seconds_all_synthetic": None,  # filled in by the parent
    }


def screen_one(args: argparse.Namespace) -> dict[str, Any]:
    """The screening phase alone (the index is built): ``screen.run`` of the candidates."""
    import appliance.identifiers.recognizers  # noqa: F401  (import cost is not screening cost)
    from appliance.privacy import screen
    from appliance.workspace import Workspace

    timers = Timers()
    instrument(timers)
    ws = Workspace.open(Path(args.one_screen) / "ws")
    cpu0 = os.times()
    t0 = time.perf_counter()
    result = screen.run(ws, corpus=None, input_path=Path(args.one_candidates))
    run_s = time.perf_counter() - t0
    cpu1 = os.times()
    report = json.loads(result.report_json.read_text()) if result.report_json else {}
    # screen.run's index_seconds: opening the saved index and the kept calibration.
    screening_s = result.seconds - result.index_seconds
    log(
        f"  screened {result.screened} in {screening_s:.1f}s "
        f"(+{result.index_seconds:.1f}s opening the index)"
    )
    return {
        "real_notes": report.get("index", {}).get("records"),
        "holdout_records": report.get("index", {}).get("holdout_records"),
        "postings": None,
        "load_seconds": round(result.index_seconds, 2),
        "screen_seconds": round(screening_s, 2),
        "run_seconds": round(run_s, 2),
        "screened": result.screened,
        "notes_per_second": round(result.screened / screening_s, 1) if screening_s else None,
        "released": result.released,
        "quarantined": result.quarantined,
        "by_detector": dict(result.by_detector),
        "verbatim_threshold": report.get("verbatim_threshold"),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "cpu_seconds_screen_run": round((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system), 1),
        "timers": {k: round(v, 2) for k, v in timers.seconds.items()},
    }


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    import appliance.identifiers.recognizers  # noqa: F401  (import cost is not screening cost)
    from appliance.privacy import screen
    from appliance.privacy.reference import DEFAULT_HOLDOUT_FRACTION, fingerprint, load_or_build
    from appliance.records import ingest
    from appliance.workspace import init

    timers = Timers()
    instrument(timers)
    work = Path(args.one_dir)
    ws = init(work / "ws")
    load = {"start": load_avg()}
    t0 = time.perf_counter()
    ing = ingest.run(ws, Path(args.one_export))
    ingest_s = time.perf_counter() - t0
    log(f"  ingested {ing.as_dict().get('stored', '?')} records in {ingest_s:.1f}s")
    t0 = time.perf_counter()
    index, built = load_or_build(ws)
    build_s = time.perf_counter() - t0
    load["after_build"] = load_avg()
    rss_build = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    log(f"  index built in {build_s:.1f}s ({len(index.record_ids)} records)")
    # Calibration runs once per index too (its result is kept beside it); time it on its own.
    t0 = time.perf_counter()
    screen.calibrate(ws, index, fingerprint(ws, DEFAULT_HOLDOUT_FRACTION, []))
    calibrate_s = time.perf_counter() - t0
    log(f"  calibrated in {calibrate_s:.1f}s")
    del index
    # Screening in a process of its own: its peak RSS is the screen's, not the build's.
    screen_out = work / "screen.json"
    subprocess.run(
        [sys.executable, __file__, "--one-screen", str(work), "--one-candidates",
         str(args.one_candidates), "--one-out", str(screen_out)],
        check=True,
    )  # fmt: skip
    out: dict[str, Any] = json.loads(screen_out.read_text())
    load["after_screen"] = load_avg()
    if args.one_extra:  # records added later: the index extended, not rebuilt
        t0 = time.perf_counter()
        added = ingest.run(ws, Path(args.one_extra))
        extend_ingest_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        extended, _ = load_or_build(ws)
        out["extend"] = {
            "added": (extended.meta.get("extended") or {}).get("added"),
            "ingest_seconds": round(extend_ingest_s, 2),
            "extend_seconds": round(time.perf_counter() - t0, 2),
            "stored": added.as_dict().get("stored"),
        }
        log(f"  extended by {out['extend']['added']} records in {out['extend']['extend_seconds']}s")
    out.update(
        {
            "ingest_seconds": round(ingest_s, 2),
            "build_seconds": round(build_s, 2),
            "index_built": built,
            "calibrate_seconds": round(calibrate_s, 2),
            "rss_mb_after_build": round(rss_build),
            "peak_rss_mb_build": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "index_mb_on_disk": round(
                sum(f.stat().st_size for f in ws.leakage_index_dir.iterdir()) / 2**20
            ),
            "load": load,
        }
    )
    idx_json = ws.leakage_index_dir / "index.json"
    if idx_json.exists():
        out["postings"] = json.loads(idx_json.read_text()).get("postings")
    if args.baseline_notes > 0:
        out["naive"] = naive_baseline(
            ws, Path(args.one_candidates), args.baseline_notes, args.baseline_sample, args.seed
        )
    return out


# --------------------------------------------------------------------------- parent


def table(rows: list[dict[str, Any]], synthetic: int) -> str:
    lines = [
        "| real notes | ingest s | index build s | calibration s | index load s | screening s | notes/s "
        "| s per 1k real | index on disk MB | peak RSS MB build | peak RSS MB screen | naive LCS s/note (extrapolated) | naive ÷ screen per note "
        "| quarantined |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        per_note = r["screen_seconds"] / max(1, r["screened"])
        naive = r.get("naive", {}).get("seconds_per_note_vs_all")
        lines.append(
            f"| {r['real_notes']:,} | {r['ingest_seconds']:.1f} | {r['build_seconds']:.1f} "
            f"| {r['calibrate_seconds']:.1f} | {r['load_seconds']:.1f} | **{r['screen_seconds']:.1f}** "
            f"| {r['notes_per_second']:,.0f} | {r['build_seconds'] / r['real_notes'] * 1000:.2f} "
            f"| {r.get('index_mb_on_disk', 0):,} | {r.get('peak_rss_mb_build', 0):,} "
            f"| {r['peak_rss_mb']:,} | {naive if naive is None else f'{naive:.2f}'} "
            f"| {'' if naive is None else f'{naive / per_note:,.0f}×'} "
            f"| {r['quarantined']:,} of {r['screened']:,} |"
        )
    lines.append("")
    names = sorted({k for r in rows for k in r["timers"]} - {"screen total"})
    lines.append("Share of the batch screening time (`Screener.screen`), per part:")
    lines.append("")
    lines.append("| part | " + " | ".join(f"{r['real_notes']:,} real" for r in rows) + " |")
    lines.append("|---|" + "---:|" * len(rows))
    for name in names:
        cells = []
        for r in rows:
            total = r["timers"].get("screen total") or 1.0
            cells.append(
                f"{r['timers'].get(name, 0.0):.1f} s ({r['timers'].get(name, 0.0) / total:.0%})"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append(
        "| all of `Screener.screen` | "
        + " | ".join(f"{r['timers'].get('screen total', 0.0):.1f} s" for r in rows)
        + " |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--sizes", default="10000,30000,100000", help="real record set sizes, comma-separated"
    )
    p.add_argument("--synthetic", type=int, default=10_000, help="synthetic notes to screen")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--baseline-notes", type=int, default=10, help="notes timed for the naive baseline"
    )
    p.add_argument(
        "--baseline-sample", type=int, default=2000, help="real notes they are compared with"
    )
    p.add_argument("--workdir", type=Path, help="keep the data and workspaces here")
    p.add_argument("--json-out", type=Path)
    p.add_argument("--one-dir", help=argparse.SUPPRESS)
    p.add_argument("--one-screen", help=argparse.SUPPRESS)
    p.add_argument("--one-extra", help=argparse.SUPPRESS)
    p.add_argument(
        "--extend",
        type=int,
        default=0,
        help="then ingest this many more real notes and time extending the index with them",
    )
    p.add_argument("--one-export", help=argparse.SUPPRESS)
    p.add_argument("--one-candidates", help=argparse.SUPPRESS)
    p.add_argument("--one-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.one_screen:  # grandchild: the screening of one size
        Path(args.one_out).write_text(json.dumps(screen_one(args)))
        return 0
    if args.one_dir:  # child: one size
        Path(args.one_out).write_text(json.dumps(run_one(args)))
        return 0

    from appliance import __version__

    sizes = sorted(int(s) for s in args.sizes.split(",") if s.strip())
    work = args.workdir or Path(tempfile.mkdtemp(prefix="screen-throughput-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    info = {
        "cpus": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "appliance": __version__,
        "load_start": load_avg(),
    }
    log(f"machine: {info}")
    real_dir = work / f"real-{max(sizes)}-seed{args.seed}"
    if not (real_dir / "notes.jsonl").exists():
        shutil.rmtree(real_dir, ignore_errors=True)
        t0 = time.perf_counter()
        demo_export(real_dir, max(sizes) + args.extend, args.seed)
        log(f"demo data: {max(sizes) + args.extend} real notes in {time.perf_counter() - t0:.0f}s")
    synth_dir = work / f"synthetic-{args.synthetic}-seed{args.seed + 1}"
    if not (synth_dir / "notes.jsonl").exists():
        shutil.rmtree(synth_dir, ignore_errors=True)
        demo_export(synth_dir, args.synthetic, args.seed + 1)
    cand = work / "synthetic.jsonl"
    n_synth = candidates_file(synth_dir / "notes.jsonl", cand)

    rows = []
    for size in sizes:
        log(f"real notes {size:,}: ingest, build, screen {n_synth:,} synthetic notes")
        one = work / f"run-{size}"
        shutil.rmtree(one, ignore_errors=True)
        one.mkdir()
        export = one / "export.jsonl"
        head_jsonl(real_dir / "notes.jsonl", export, size)
        extra: list[str] = []
        if args.extend:
            n_extra = head_jsonl(real_dir / "notes.jsonl", one / "extra.jsonl", args.extend, size)
            extra = ["--one-extra", str(one / "extra.jsonl")] if n_extra else []
        out = one / "result.json"
        cmd = [
            sys.executable,
            __file__,
            "--one-dir", str(one),
            "--one-export", str(export),
            "--one-candidates", str(cand),
            "--one-out", str(out),
            "--seed", str(args.seed),
            "--baseline-notes", str(args.baseline_notes),
            "--baseline-sample", str(args.baseline_sample),
            *extra,
        ]  # fmt: skip
        subprocess.run(cmd, check=True)
        row = json.loads(out.read_text())
        row["real_notes"] = size
        if row.get("naive"):
            row["naive"]["extrapolated_seconds_all_synthetic"] = (
                row["naive"]["seconds_per_note_vs_all"] * n_synth
            )
        rows.append(row)
        if not args.workdir:
            shutil.rmtree(one / "ws", ignore_errors=True)

    info["load_end"] = load_avg()
    info["wall_seconds"] = round(time.perf_counter() - started, 1)
    print(f"# Leakage screen throughput: {n_synth:,} synthetic notes\n")
    print(
        f"Machine: {info['cpus']} CPUs ({info['cpu']}), Python {info['python']}; "
        f"load average {info['load_start']} at start, {info['load_end']} at end; "
        f"{info['wall_seconds']:.0f} s in all.\n"
    )
    print(table(rows, n_synth))
    grown = [r for r in rows if r.get("extend")]
    if grown:
        print("\nRecords added later: the index extended with them, against building it anew:\n")
        print("| real notes | added | ingest s | extend s | build from scratch s (above) |")
        print("|---:|---:|---:|---:|---:|")
        for r in grown:
            e = r["extend"]
            print(
                f"| {r['real_notes']:,} | {e['added']:,} | {e['ingest_seconds']:.1f} "
                f"| **{e['extend_seconds']:.1f}** | {r['build_seconds']:.1f} |"
            )
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        grow = b["real_notes"] / a["real_notes"]
        print(
            f"\nReal notes ×{grow:.0f}: index build ×{b['build_seconds'] / a['build_seconds']:.1f}, "
            f"screening ×{b['screen_seconds'] / a['screen_seconds']:.1f}."
        )
    if args.json_out:
        args.json_out.write_text(
            json.dumps({"machine": info, "synthetic": n_synth, "sizes": rows}, indent=1) + "\n"
        )
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
