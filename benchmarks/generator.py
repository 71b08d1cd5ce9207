"""Generator benchmark: training speed, held-out perplexity, sampling speed and sample quality.

Runs the appliance's generator stage end to end on public clinical-note
sections (MTS-Dialog, from ``../shared/corpora``; never copied into the
repository) in a throw-away workspace, and measures every figure next to a
baseline computed in the same run:

* training: tokens/s (the trainer's own figure and tokens processed / wall
  clock of the training loop), wall time, train/held-out record and token
  counts, parameter count;
* held-out perplexity of the trained GPT-2 (the trainer's figure, on its
  evaluation windows, and our own over the whole held-out token stream) versus
  an add-one unigram, an add-one bigram and an interpolated absolute-discount
  bigram fitted on the same training token stream with the same tokenizer;
* sampling speed: ``appliance generate`` (transformers backend, KV cache)
  tokens/s, and on the same prompts and seeds the appliance's backend versus
  the same model's ``generate`` with ``use_cache=False`` (naive baseline);
* diversity: distinct-1/2/3 (unique n-grams / total n-grams over whitespace
  tokens) and mean length in words of generated notes versus real held-out
  notes (same number of notes on both sides);
* memorization indicator: the share of 8-word shingles that occur verbatim in
  the training notes, for generated notes versus real held-out notes.

Usage::

    .venv/bin/python benchmarks/generator.py                      # small recipe, 200 notes
    .venv/bin/python benchmarks/generator.py --recipe tiny --max-steps 20 --count 32
    .venv/bin/python benchmarks/generator.py --json-out generator.json --device cpu
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPORA = REPO.parent / "shared" / "corpora"
MTS_FILES = ("MTS-Dialog-TrainingSet.csv", "MTS-Dialog-ValidationSet.csv")
SHINGLE = 8
SHORT_SHINGLE = 4


# ---------------------------------------------------------------------------
# figures


@dataclass
class Figure:
    group: str
    name: str
    value: float | int | str | None
    baseline: float | int | str | None = None
    note: str = ""


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def add(
        self,
        group: str,
        name: str,
        value: float | int | str | None,
        baseline: float | int | str | None = None,
        note: str = "",
    ) -> None:
        self.figures.append(Figure(group, name, value, baseline, note))

    def table(self) -> str:
        rows = [("group", "figure", "value", "baseline / comparison", "note")]
        rows += [(f.group, f.name, _fmt(f.value), _fmt(f.baseline), f.note) for f in self.figures]
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = []
        for n, r in enumerate(rows):
            lines.append(
                "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
            )
            if n == 0:
                lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "info": self.info,
            "figures": [
                {
                    "group": f.group,
                    "name": f.name,
                    "value": f.value,
                    "baseline": f.baseline,
                    "note": f.note,
                }
                for f in self.figures
            ],
        }


def _fmt(v: float | int | str | None) -> str:
    if v is None:
        return "—"
    if isinstance(v, (bool, str)):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if math.isnan(v) or math.isinf(v):
        return str(v)
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3f}"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# machine


def machine_info() -> dict[str, Any]:
    import torch
    import transformers

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "nproc": os.cpu_count(),
        "sched_affinity": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else None,
        "cpu_model": cpu,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "gpu": gpu,
    }


@dataclass(frozen=True)
class CpuSnapshot:
    """System-wide busy and steal CPU seconds (/proc/stat), this process's CPU seconds, wall clock."""

    busy: float
    steal: float
    own: float
    wall: float

    @classmethod
    def take(cls) -> CpuSnapshot:
        busy = steal = float("nan")
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
            tick = os.sysconf("SC_CLK_TCK")
            # user nice system idle iowait irq softirq steal
            busy = (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / tick
            steal = fields[7] / tick if len(fields) > 7 else 0.0
        except (OSError, ValueError, IndexError):
            pass
        t = os.times()
        return cls(busy, steal, t.user + t.system, time.monotonic())

    def since(self, start: CpuSnapshot) -> dict[str, float]:
        """Shares of the machine's CPU capacity over the interval: ours, other processes', stolen."""
        capacity = (self.wall - start.wall) * (os.cpu_count() or 1)
        own = self.own - start.own
        return {
            "own": own / capacity,
            "others": max(0.0, (self.busy - start.busy) - own) / capacity,
            "steal": (self.steal - start.steal) / capacity,
        }


def cpu_note(shares: dict[str, float]) -> str:
    return (
        f"CPU capacity used: this run {shares['own']:.0%}, other processes {shares['others']:.0%}, "
        f"hypervisor steal {shares['steal']:.0%}"
    )


def uptime() -> str:
    try:
        return subprocess.run(
            ["uptime"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        return "load average: {:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())


# ---------------------------------------------------------------------------
# corpus


def write_mts_export(corpora: Path, out: Path) -> int:
    """MTS-Dialog training + validation sections as an appliance CSV export; returns the row count."""
    folder = corpora / "mts-dialog"
    missing = [name for name in MTS_FILES if not (folder / name).is_file()]
    if missing:
        raise SystemExit(
            f"error: MTS-Dialog not found: {folder} lacks {', '.join(missing)}; "
            "pass --corpora DIR (the folder holding mts-dialog/)"
        )
    rows = 0
    with out.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["note_id", "text", "note_type"])
        for name in MTS_FILES:
            split = "train" if "Training" in name else "valid"
            with (folder / name).open(encoding="utf-8", newline="") as src:
                for row in csv.DictReader(src):
                    text = (row.get("section_text") or "").strip()
                    if not text:
                        continue
                    note_type = (row.get("section_header") or "").strip().lower()
                    writer.writerow([f"{split}-{row['ID']}", text, note_type])
                    rows += 1
    return rows


# ---------------------------------------------------------------------------
# n-gram language-model baselines (token level, same tokenizer and stream as the generator)


def ngram_perplexities(
    train: Sequence[int], holdout: Sequence[int], vocab: int
) -> dict[str, float]:
    """Perplexity over holdout[1:] of unigram / bigram models fitted on ``train``.

    * unigram, add-one: (c(w) + 1) / (N + V)
    * bigram, add-one: (c(v, w) + 1) / (c(v) + V)
    * bigram, interpolated absolute discounting (d = 0.75) with the add-one
      unigram as the lower order: a stronger n-gram baseline with no tuning on
      the held-out data.
    """
    uni = Counter(train)
    n = len(train)
    bi = Counter(itertools.pairwise(train))
    hist = Counter(train[:-1])
    followers = Counter(v for v, _ in bi)
    d = 0.75

    def p_uni(w: int) -> float:
        return (uni[w] + 1) / (n + vocab)

    nll = {"unigram": 0.0, "bigram_add1": 0.0, "bigram_absdisc": 0.0}
    for v, w in itertools.pairwise(holdout):
        pu = p_uni(w)
        nll["unigram"] -= math.log(pu)
        c_v = hist[v]
        c_vw = bi[(v, w)]
        nll["bigram_add1"] -= math.log((c_vw + 1) / (c_v + vocab))
        # Absolute discounting; a history never seen in training backs off to the unigram.
        p = max(c_vw - d, 0.0) / c_v + d * followers[v] / c_v * pu if c_v else pu
        nll["bigram_absdisc"] -= math.log(p)
    count = max(1, len(holdout) - 1)
    return {k: math.exp(v / count) for k, v in nll.items()}


def model_perplexity(model: Any, stream: Any, block: int, device: str) -> float:
    """The GPT-2's perplexity over the whole stream (holdout[1:]), in consecutive windows of ``block``."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(stream) - 1, block):
            chunk = stream[start : start + block + 1]
            if len(chunk) < 2:
                break
            x = chunk[:-1].unsqueeze(0).to(device)
            y = chunk[1:].to(device)
            logits = model(input_ids=x).logits[0].float()
            total += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
            count += len(y)
    return math.exp(total / max(1, count))


# ---------------------------------------------------------------------------
# text statistics


def words(text: str) -> list[str]:
    return text.split()


def ngrams(tokens: Sequence[str], n: int) -> Iterable[tuple[str, ...]]:
    return (tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def distinct(texts: Sequence[str], n: int) -> float:
    total, unique = 0, set()
    for t in texts:
        grams = list(ngrams(words(t), n))
        total += len(grams)
        unique.update(grams)
    return len(unique) / total if total else float("nan")


def mean_words(texts: Sequence[str]) -> float:
    return sum(len(words(t)) for t in texts) / len(texts) if texts else float("nan")


def shingle_overlap(
    texts: Sequence[str], reference: set[tuple[str, ...]], n: int = SHINGLE
) -> tuple[float, float, int]:
    """(share of ``n``-word shingles found in ``reference``, share of notes with ≥1, shingles)."""
    total = hits = notes_hit = 0
    for t in texts:
        grams = list(ngrams(words(t), n))
        found = sum(1 for g in grams if g in reference)
        total += len(grams)
        hits += found
        notes_hit += found > 0
    return (
        hits / total if total else float("nan"),
        notes_hit / len(texts) if texts else 0.0,
        total,
    )


def strip_prefix(doc: str, prefix: str) -> str:
    """A training document is ``prefix\\ntext`` when generation is conditional."""
    return doc[len(prefix) + 1 :] if prefix and doc.startswith(prefix + "\n") else doc


# ---------------------------------------------------------------------------
# sampling speed: the appliance's backend (KV cache) versus use_cache=False


def sampling_comparison(
    gen: Any, settings: Any, device: str, batches: int
) -> dict[str, float | int | bool]:
    """The first ``batches`` batches of ``appliance generate`` (same prompts, same seeds), twice."""
    import torch

    from appliance.generator.sample import TransformersBackend
    from appliance.generator.tokenizer import EOS

    tok = gen.tokenizer
    eos = tok.token_to_id(EOS)
    n_positions = gen.model.config.n_positions
    backend = TransformersBackend(gen, settings, device)
    model = backend.model
    jobs = []
    for index in range(1, batches + 1):
        batch_seed = settings.seed * 1_000_003 + index
        rng = random.Random(batch_seed)
        prefixes = gen.sampler.sample(rng, settings.batch_size)
        prompts = [[eos, *tok.encode(f"{p}\n" if p else "").ids] for p in prefixes]
        budget = [
            max(1, min(settings.max_new_tokens or n_positions, n_positions - len(p)))
            for p in prompts
        ]
        jobs.append((prompts, batch_seed, budget))

    def count(outputs: list[list[int]]) -> tuple[int, int]:
        tokens = capped = 0
        for out in outputs:
            if eos in out:
                tokens += out.index(eos)
            else:
                tokens += len(out)
                capped += 1
        return tokens, capped

    def naive(prompts: list[list[int]], seed: int, budget: list[int]) -> list[list[int]]:
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[eos] * (width - len(p)) + p for p in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        torch.manual_seed(seed)
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                temperature=settings.temperature,
                top_k=settings.top_k,
                top_p=settings.top_p,
                max_new_tokens=max(1, min(max(budget), n_positions - width)),
                pad_token_id=eos,
                eos_token_id=eos,
                use_cache=False,
            )
        return [row[width:].tolist() for row in out]

    results: dict[str, Any] = {}
    outputs: dict[str, list[list[int]]] = {}
    for name, fn in (("cached", backend.complete), ("naive", naive)):
        t0 = time.monotonic()
        tokens = capped = 0
        outs: list[list[int]] = []
        for prompts, seed, budget in jobs:
            out = fn(prompts, seed, budget)
            outs.extend(out)
            t, c = count(out)
            tokens += t
            capped += c
        seconds = time.monotonic() - t0
        log(f"sampling ({name}): {tokens} tokens in {seconds:.1f}s")
        results[f"{name}_tokens"] = tokens
        results[f"{name}_seconds"] = seconds
        results[f"{name}_tokens_per_second"] = tokens / seconds if seconds > 0 else 0.0
        results[f"{name}_capped"] = capped
        outputs[name] = [o[: o.index(eos)] if eos in o else o for o in outs]
    results["notes"] = sum(len(p) for p, _, _ in jobs)
    results["identical_outputs"] = outputs["cached"] == outputs["naive"]
    return results


# ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(
            "Generator benchmark on MTS-Dialog: training speed and held-out perplexity "
            "(vs unigram/bigram baselines), sampling speed (KV cache vs use_cache=False), "
            "distinct-n and length vs real held-out notes, and a memorization indicator "
            "(8-word shingles found verbatim in the training notes)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--corpora", type=Path, default=DEFAULT_CORPORA, help="folder holding mts-dialog/"
    )
    p.add_argument(
        "--recipe",
        default="small",
        help="generator recipe name (tiny, small, gpt2-124m) or TOML file",
    )
    p.add_argument(
        "--max-steps", type=int, default=None, help="override the recipe's max_steps (shorter run)"
    )
    p.add_argument("--count", type=int, default=200, help="synthetic notes to generate")
    p.add_argument("--batch-size", type=int, default=16, help="sampling batch size")
    p.add_argument(
        "--naive-batches",
        type=int,
        default=4,
        help="sampling batches timed with and without the KV cache (same prompts and seeds as generate)",
    )
    p.add_argument("--seed", type=int, default=1, help="sampling seed")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="empty or new folder for the workspace and the converted export (kept); default: a temporary folder, removed",
    )
    p.add_argument(
        "--json-out", type=Path, default=None, help="also write every figure to this JSON file"
    )
    args = p.parse_args(argv)
    if args.count < 1 or args.batch_size < 1 or args.naive_batches < 0:
        p.error("--count and --batch-size must be ≥ 1, --naive-batches ≥ 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    corpora = args.corpora.expanduser().resolve()
    if not (corpora / "mts-dialog").is_dir():
        print(
            f"error: {corpora / 'mts-dialog'} not found; the benchmark needs the public corpora "
            "(pass --corpora DIR, the folder holding mts-dialog/)",
            file=sys.stderr,
        )
        return 2
    if args.workdir is not None:
        work = args.workdir.expanduser().resolve()
        if work.exists() and any(work.iterdir()):
            print(f"error: --workdir {work} is not empty", file=sys.stderr)
            return 2
        work.mkdir(parents=True, exist_ok=True)
        return guarded(args, corpora, work)
    with tempfile.TemporaryDirectory(prefix="appliance-bench-generator-") as tmp:
        return guarded(args, corpora, Path(tmp))


def guarded(args: argparse.Namespace, corpora: Path, work: Path) -> int:
    """``run``, with the appliance's user-facing errors as one line instead of a traceback."""
    from appliance.errors import ApplianceError

    try:
        return run(args, corpora, work)
    except ApplianceError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace, corpora: Path, work: Path) -> int:
    import torch

    from appliance import workspace
    from appliance.generator import sample, train
    from appliance.generator.artifact import load_generator
    from appliance.generator.data import encode, prepare
    from appliance.generator.recipes import load_recipe
    from appliance.records import ingest
    from appliance.records.ingest import open_store
    from appliance.training import resolve_device

    t_start = time.monotonic()
    report = Report()
    info = report.info
    info["command"] = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    info["machine"] = machine_info()
    info["uptime_start"] = uptime()
    info["settings"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    log(f"machine: {info['machine']}; {info['uptime_start']}")

    # 1. workspace and ingest -------------------------------------------------
    export = work / "export" / "mts-dialog.csv"
    export.parent.mkdir(parents=True)
    rows = write_mts_export(corpora, export)
    ws = workspace.init(work / "ws")
    t0 = time.monotonic()
    ing = ingest.run(ws, export)
    ingest_s = time.monotonic() - t0
    log(f"ingested {ing.stored} records ({ing.rejected} rejected) in {ingest_s:.1f}s")
    report.add("data", "export rows (MTS-Dialog train+validation, non-empty)", rows)
    report.add("data", "records stored / rejected", f"{ing.stored} / {ing.rejected}")

    # 2. training -------------------------------------------------------------
    recipe = load_recipe(args.recipe).with_overrides(max_steps=args.max_steps, device=args.device)
    t = recipe.train
    step_times: list[tuple[int, float]] = []
    loads: list[float] = []  # 1-minute load average, sampled every ~30 s while training
    last_print = [0.0]

    def progress(p: train.TrainProgress) -> None:
        now = time.monotonic()
        step_times.append((p.step, now))
        if p.val_loss is not None or now - last_print[0] > 30 or p.step == p.max_steps:
            last_print[0] = now
            loads.append(os.getloadavg()[0])
            val = f", held-out loss {p.val_loss:.3f}" if p.val_loss is not None else ""
            log(
                f"train step {p.step}/{p.max_steps} loss {p.loss:.3f}{val}, "
                f"{p.tokens_per_second:.0f} tokens/s, eta {p.eta_seconds:.0f}s"
            )

    load_before_train = os.getloadavg()
    cpu_before_train = CpuSnapshot.take()
    t0 = time.monotonic()
    result = train.run(ws, recipe=recipe, progress=progress)
    train_s = time.monotonic() - t0
    load_after_train = os.getloadavg()
    cpu_train = CpuSnapshot.take().since(cpu_before_train)
    info["cpu_shares_training"] = cpu_train
    info["uptime_after_train"] = uptime()
    log(result.summary())
    manifest = json.loads((ws.models_dir / "generator" / "manifest.json").read_text())
    block = int(manifest["recipe"]["model"]["block_size"])
    tokens_per_step = t.batch_size * block
    processed = result.steps * tokens_per_step
    # Training-loop wall clock: from the first step's end to the last's, over the steps in between
    # (excludes data preparation, tokenizer training and saving).
    loop_rate = None
    if len(step_times) >= 2:
        (s0, t_first), (s1, t_last) = step_times[0], step_times[-1]
        if t_last > t_first:
            loop_rate = (s1 - s0) * tokens_per_step / (t_last - t_first)
    # The median step is robust to other processes competing for the two cores part of the time.
    durations = sorted(b - a for (sa, a), (sb, b) in itertools.pairwise(step_times) if sb == sa + 1)
    median_rate = tokens_per_step / durations[len(durations) // 2] if durations else None
    info["train_step_seconds"] = {
        "min": durations[0] if durations else None,
        "median": durations[len(durations) // 2] if durations else None,
        "p90": durations[int(len(durations) * 0.9)] if durations else None,
        "max": durations[-1] if durations else None,
    }
    info["train_load_samples"] = loads

    report.add("training", "recipe", f"{recipe.recipe.name} ({result.steps} steps)")
    report.add("training", "parameters", int(manifest["parameters"]))
    report.add(
        "training", "train / held-out records", f"{result.train_records} / {result.holdout_records}"
    )
    report.add(
        "training",
        "train / held-out tokens (stream)",
        f"{result.train_tokens:,} / {result.holdout_tokens:,}",
    )
    report.add(
        "training",
        "tokens processed (steps × batch × block)",
        processed,
        note=f"{processed / max(1, result.train_tokens):.1f} passes over the train stream",
    )
    report.add(
        "training",
        "tokens/s (trainer's figure)",
        result.tokens_per_second,
        note="train loop, incl. evals and checkpoints",
    )
    report.add("training", "tokens/s (own clock, loop)", loop_rate, note="first to last step")
    report.add(
        "training",
        "tokens/s (own clock, median step)",
        median_rate,
        note="robust to other processes competing part of the time",
    )
    report.add(
        "training",
        "tokens/s (own clock, whole train call)",
        processed / train_s,
        note="incl. pseudonymization, tokenizer, saving",
    )
    report.add("training", "wall time, train call (s)", train_s)
    report.add(
        "training",
        "load average before / max during / after training",
        f"{load_before_train[0]:.2f} / {max(loads, default=float('nan')):.2f} / {load_after_train[0]:.2f}",
        note="1-minute; 2 cores; this run alone adds ~2",
    )
    report.add("training", "CPU contention during training", cpu_note(cpu_train))

    # 3a. perplexity vs n-gram baselines ------------------------------------------
    device = resolve_device(args.device)
    gen = load_generator(ws, device=device)
    t0 = time.monotonic()
    corpus, schema = prepare(ws, recipe)
    prepare_s = time.monotonic() - t0
    train_stream = encode(gen.tokenizer, corpus.train_docs)
    holdout_stream = encode(gen.tokenizer, corpus.holdout_docs)
    info["stream_check"] = {
        "train_tokens_reproduced": len(train_stream),
        "train_tokens_trainer": result.train_tokens,
        "holdout_tokens_reproduced": len(holdout_stream),
        "holdout_tokens_trainer": result.holdout_tokens,
    }
    if len(train_stream) != result.train_tokens or len(holdout_stream) != result.holdout_tokens:
        log(f"WARNING: reproduced token streams differ from training: {info['stream_check']}")
    vocab = gen.tokenizer.get_vocab_size()
    t0 = time.monotonic()
    baselines = ngram_perplexities(train_stream.tolist(), holdout_stream.tolist(), vocab)
    own_ppl = model_perplexity(gen.model, holdout_stream, block, device)
    train_ppl = model_perplexity(gen.model, train_stream, block, device)
    log(f"perplexities computed in {time.monotonic() - t0:.1f}s: model {own_ppl:.1f}, {baselines}")
    report.add(
        "perplexity",
        "GPT-2 held-out (trainer's figure)",
        result.holdout_perplexity,
        baselines["bigram_absdisc"],
        note=f"{t.eval_batches}×{t.batch_size} random {block}-token windows; baseline: best n-gram (whole stream)",
    )
    report.add(
        "perplexity",
        "GPT-2 held-out, whole stream (own)",
        own_ppl,
        baselines["bigram_absdisc"],
        note="same tokens as the n-gram rows; baseline: best n-gram",
    )
    report.add(
        "perplexity",
        "GPT-2 on its training stream (own)",
        train_ppl,
        note="gap to held-out = overfitting",
    )
    report.add(
        "perplexity",
        "unigram, add-one (held-out)",
        baselines["unigram"],
        note="same tokenizer and streams",
    )
    report.add("perplexity", "bigram, add-one (held-out)", baselines["bigram_add1"])
    report.add(
        "perplexity",
        "bigram, interpolated abs. discount 0.75 (held-out)",
        baselines["bigram_absdisc"],
    )
    report.add("perplexity", "tokenizer vocabulary", vocab)

    # 3b. sampling speed ----------------------------------------------------------
    settings = sample.SamplingSettings(batch_size=args.batch_size, seed=args.seed)
    load_before_sample = os.getloadavg()
    cpu_before_sample = CpuSnapshot.take()
    t0 = time.monotonic()
    gres = sample.run(ws, count=args.count, settings=settings, device=args.device)
    sample_s = time.monotonic() - t0
    log(gres.summary())
    comparison: dict[str, Any] = {}
    if args.naive_batches:
        batches = min(args.naive_batches, math.ceil(args.count / args.batch_size))
        comparison = sampling_comparison(gen, settings, device, batches)
    load_after_sample = os.getloadavg()
    cpu_sample = CpuSnapshot.take().since(cpu_before_sample)
    info["cpu_shares_sampling"] = cpu_sample
    info["uptime_after_sampling"] = uptime()
    report.add(
        "sampling",
        f"appliance generate, {gres.written} notes: tokens/s",
        gres.tokens_per_second,
        note=(
            f"transformers backend, {device}, KV cache; {gres.tokens:,} tokens in {gres.seconds:.1f}s "
            f"(incl. model load); temperature {settings.temperature}, top-k {settings.top_k}, "
            f"top-p {settings.top_p}, batch {settings.batch_size}, seed {settings.seed}"
        ),
    )
    if comparison:
        report.add(
            "sampling",
            f"same {comparison['notes']} prompts+seeds: KV cache (appliance backend) vs use_cache=False, tokens/s",
            comparison["cached_tokens_per_second"],
            comparison["naive_tokens_per_second"],
            note="speed-up {:.1f}×; identical outputs: {}".format(
                comparison["cached_tokens_per_second"]
                / max(1e-9, comparison["naive_tokens_per_second"]),
                comparison["identical_outputs"],
            ),
        )
        report.add(
            "sampling",
            "notes that hit the context limit (no end-of-text)",
            f"{comparison['cached_capped']} / {comparison['notes']}",
            note="on the timed subset",
        )
    report.add(
        "sampling",
        "load average before / after sampling",
        f"{load_before_sample[0]:.2f} / {load_after_sample[0]:.2f}",
        note="1-minute; 2 cores",
    )
    report.add("sampling", "CPU contention during sampling", cpu_note(cpu_sample))

    # 3c. diversity and memorization ---------------------------------------------
    records = {r.id: r for r in open_store(ws)}
    train_bodies = [
        strip_prefix(doc, schema.render(records[rid]))
        for doc, rid in zip(corpus.train_docs, corpus.train_ids, strict=True)
    ]
    holdout_bodies = [
        strip_prefix(doc, schema.render(records[rid]))
        for doc, rid in zip(corpus.holdout_docs, corpus.holdout_ids, strict=True)
    ]
    generated = [n.text for n in corpus.read_corpus(ws, "default")]
    n_cmp = min(len(generated), len(holdout_bodies))
    gen_cmp, real_cmp = generated[:n_cmp], holdout_bodies[:n_cmp]
    for n in (1, 2, 3):
        report.add(
            "diversity",
            f"distinct-{n}, generated vs real held-out",
            distinct(gen_cmp, n),
            distinct(real_cmp, n),
            note=f"{n_cmp} notes each" if n == 1 else "",
        )
    report.add(
        "diversity",
        "mean note length (words), generated vs real held-out",
        mean_words(gen_cmp),
        mean_words(real_cmp),
        note=f"{sum(len(words(x)) for x in gen_cmp):,} vs {sum(len(words(x)) for x in real_cmp):,} words in total",
    )
    reference = {g for body in train_bodies for g in ngrams(words(body), SHINGLE)}
    g_share, g_notes, g_total = shingle_overlap(generated, reference)
    r_share, r_notes, r_total = shingle_overlap(holdout_bodies, reference)
    report.add(
        "memorization",
        f"{SHINGLE}-word shingles found verbatim in training notes, generated vs real held-out",
        g_share,
        r_share,
        note=f"{g_total:,} vs {r_total:,} shingles ({len(generated)} vs {len(holdout_bodies)} notes)",
    )
    report.add(
        "memorization",
        f"notes with ≥1 verbatim training {SHINGLE}-gram, generated vs real held-out",
        g_notes,
        r_notes,
        note=f"notes shorter than {SHINGLE} words count as having none",
    )
    short = {g for body in train_bodies for g in ngrams(words(body), SHORT_SHINGLE)}
    g4, _, g4_total = shingle_overlap(generated, short, SHORT_SHINGLE)
    r4, _, r4_total = shingle_overlap(holdout_bodies, short, SHORT_SHINGLE)
    report.add(
        "memorization",
        f"{SHORT_SHINGLE}-word shingles found in training notes, generated vs real held-out",
        g4,
        r4,
        note=f"phrase reuse, for context; {g4_total:,} vs {r4_total:,} shingles",
    )

    total_s = time.monotonic() - t_start
    report.add("run", "wall time, whole benchmark (s)", total_s)
    report.add(
        "run",
        "of which: ingest / train / sample (appliance generate) (s)",
        f"{ingest_s:.0f} / {train_s:.0f} / {sample_s:.0f}",
    )
    report.add("run", "data preparation (pseudonymization), re-run for baselines (s)", prepare_s)
    info["uptime_end"] = uptime()
    info["train_result"] = {
        k: v for k, v in vars(result).items() if k not in ("manifest_path", "history")
    }
    info["history"] = result.history
    info["sampling_comparison"] = comparison
    info["torch_threads"] = torch.get_num_threads()

    print(
        f"# Generator benchmark ({info['machine']['cpu_model']}, {info['machine']['nproc']} cores, torch {info['machine']['torch']})"
    )
    print(f"# {info['command']}")
    print(f"# start: {info['uptime_start']}")
    print(f"# after training: {info['uptime_after_train']}")
    print(f"# after sampling: {info['uptime_after_sampling']}")
    print(report.table())
    if args.json_out is not None:
        args.json_out.write_text(
            json.dumps(report.as_dict(), indent=2, default=str) + "\n", encoding="utf-8"
        )
        log(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
