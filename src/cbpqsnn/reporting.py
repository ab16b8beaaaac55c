"""Results of one run (a rich table) and of a sweep (markdown + CSV table and plots)."""

from __future__ import annotations

import csv
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cbpqsnn.quant.baselines import ALGORITHMS, algorithm_label, label_order
from cbpqsnn.quant.callback import FP32_FINETUNE


def print_summary(summary: dict[str, Any], run_dir: str | Path, console: Console | None = None) -> None:
    """Print the short results table of one run."""
    table = Table(title=f"{summary['method']} / {summary['data']} / {summary['model']} / "
                        f"{summary['quant']} ({summary['algorithm']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("FP32 test accuracy", f"{summary['fp32_acc']:.2f} %"),
        ("FP32 test accuracy after fine-tuning" if summary["algorithm"] == FP32_FINETUNE
         else "quantized test accuracy", f"{summary['quant_acc']:.2f} %"),
        ("difference", f"{summary['acc_delta']:+.2f} points"),
        ("latent weights before the bake", f"{summary['latent_acc']:.2f} %"
         if summary.get("latent_acc") is not None else "--"),
        ("levels ok / final CFS", f"{summary['levels_ok']} / {summary['cfs_final']:.3g}"),
        ("bits per quantized weight", str(summary["bits_per_weight"])),
        ("weight memory", f"{summary['weight_memory_bytes']:,} B of "
                          f"{summary['fp32_weight_memory_bytes']:,} B "
                          f"({100 * summary['memory_ratio']:.2f} %)"),
        ("final g", str(summary["g_final"])),
        ("SynOps / inference", f"{summary['synops']:,.0f}" if "synops" in summary else "--"),
        ("energy / inference (FP32 -> this run)",
         f"{summary['energy_uj_fp32']:.3f} -> {summary['energy_uj']:.3f} µJ"
         if "energy_uj" in summary else "--"),
        ("epochs pretrain / CBP", f"{summary['epochs_pretrain']} / {summary['epochs_cbp']}"),
        ("wall time", f"{summary['wall_time_s']:.0f} s"),
        ("PyTorch, threads, CPU / GPU", _environment_line(summary.get("environment"))),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console = console or Console()
    console.print(table)
    console.print(f"artifacts: {run_dir}")


def _environment_line(environment: dict[str, Any] | None) -> str:
    """``summary.json``'s ``environment`` in one line (runs from before it was recorded: --)."""
    if not environment:
        return "--"
    return (f"{environment['torch']}, {environment['threads']} thread(s), "
            f"{environment['gpu'] or environment['cpu']}")


# --------------------------------------------------------------------------- sweeps

COLUMNS = ("row", "quant", "algorithm", "seeds", "fp32_acc", "quant_acc", "acc_delta", "latent_acc",
           "bake_cost", "memory_ratio", "synops", "energy_uj")
NUMBERS = ("fp32_acc", "quant_acc", "acc_delta", "latent_acc", "bake_cost", "memory_ratio", "synops",
           "energy_uj")


def load_summaries(sweep_dir: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every ``summary.json`` below ``sweep_dir`` (one per finished job), sorted by path; in a
    tuned comparison (``tuning.json``) not the tuning runs below ``tuning/`` (report that folder
    on its own)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep folder not found: {sweep_dir}")
    tuning = sweep_dir / "tuning" if (sweep_dir / "tuning.json").is_file() else None
    found = [(p.parent, json.loads(p.read_text())) for p in sorted(sweep_dir.rglob("summary.json"))
             if tuning is None or tuning not in p.parents]
    if not found:
        raise FileNotFoundError(f"no summary.json below {sweep_dir}: no job of this sweep finished")
    return found


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (matrix row, level set, algorithm): mean and std over seeds."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for s in summaries:
        groups[(_row(s), s["quant"], _label(s))].append(s)
    table = []
    for (row, quant, algorithm), runs in sorted(groups.items()):
        entry: dict[str, Any] = {"row": row, "quant": quant, "algorithm": algorithm,
                                 "seeds": len(runs)}
        for key in NUMBERS:
            values = [_number(r, key) for r in runs]
            known = [v for v in values if v is not None]
            entry[key], entry[f"{key}_std"] = _mean_std(known) if len(known) == len(values) else (None, None)
        table.append(entry)
    return table


def _row(summary: dict[str, Any]) -> str:
    """The matrix row a run belongs to (older summaries have no ``row``: method_data)."""
    return summary.get("row") or f"{summary['method']}_{summary['data']}"


def _label(summary: dict[str, Any]) -> str:
    """The algorithm a run counts as: its ``algorithm``, with ``@<variant>`` where it tried one."""
    return algorithm_label(summary["algorithm"], summary.get("variant"))


def _number(summary: dict[str, Any], key: str) -> float | None:
    """``key`` of one run; ``bake_cost`` = quantized - latent (pre-bake) accuracy. None where an
    older summary lacks it."""
    if key == "bake_cost":
        latent = summary.get("latent_acc")
        return None if latent is None else float(summary["quant_acc"]) - float(latent)
    value = summary.get(key)
    return None if value is None else float(value)


def _fmt(entry: dict[str, Any], key: str) -> str:
    if entry[key] is None:
        return "--"
    if key == "memory_ratio":
        return f"{100 * entry[key]:.2f} %"
    if key == "synops":
        return f"{entry[key]:,.0f}"
    if key == "energy_uj":
        return f"{entry[key]:.3f}"
    value = f"{entry[key]:+.2f}" if key in ("acc_delta", "bake_cost") else f"{entry[key]:.2f}"
    return value + (f" ± {entry[f'{key}_std']:.2f}" if entry["seeds"] > 1 else "")


def _header(columns: list[str]) -> list[str]:
    """The two header lines of a markdown table keyed by (row, level set)."""
    return ["| row | quant | " + " | ".join(columns) + " |", "|" + "---|" * (2 + len(columns))]


def side_by_side(table: list[dict[str, Any]]) -> list[str]:
    """Markdown: one line per (row, level set), one column per algorithm: quantized accuracy
    (mean ± std over seeds) and its delta to FP32; the best mean in bold; where the row has the
    equal-training reference, a last column with its accuracy. Empty when no (row, level set) has
    two algorithms."""
    quantized = [e for e in table if e["algorithm"].split("@", 1)[0] in ALGORITHMS]
    algorithms = sorted({e["algorithm"] for e in quantized}, key=label_order)
    references = {e["row"]: e for e in table if e["algorithm"] == FP32_FINETUNE}  # fp32_finetune
    groups: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for e in quantized:
        groups[(e["row"], e["quant"])][e["algorithm"]] = e
    if not any(len(g) > 1 for g in groups.values()):
        return []
    columns = [*algorithms, *(["FP32 fine-tuned as long"] if references else [])]
    lines = _header(columns)
    for (row, quant), by_algorithm in sorted(groups.items()):
        best = max(e["quant_acc"] for e in by_algorithm.values())
        cells = []
        for algorithm in algorithms:
            e = by_algorithm.get(algorithm)
            if e is None:
                cells.append("--")
                continue
            text = f"{_fmt(e, 'quant_acc')} ({_fmt(e, 'acc_delta')})"
            cells.append(f"**{text}**" if e["quant_acc"] == best else text)
        if references:
            ref = references.get(row)
            cells.append(f"{_fmt(ref, 'quant_acc')} ({_fmt(ref, 'acc_delta')})" if ref else "--")
        lines.append(f"| {row} | {quant} | " + " | ".join(cells) + " |")
    return lines


def against_reference(summaries: list[dict[str, Any]]) -> list[str]:
    """Markdown: one line per (row, level set), one column per algorithm: quantized accuracy minus
    that of the FP32 network fine-tuned as long from the same FP32 checkpoint (``fp32_finetune``),
    paired by seed -- what quantizing costs at equal training; mean ± std over the seeds both ran,
    with their number. Empty without a reference."""
    reference = {(_row(s), s["seed"]): float(s["quant_acc"]) for s in summaries
                 if s["algorithm"] == FP32_FINETUNE}
    gaps: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for s in summaries:
        key = (_row(s), s.get("seed"))
        if _label(s).split("@", 1)[0] in ALGORITHMS and key in reference:
            gaps[(key[0], s["quant"])][_label(s)].append(float(s["quant_acc"]) - reference[key])
    if not gaps:
        return []
    algorithms = sorted({a for g in gaps.values() for a in g}, key=label_order)
    lines = _header(algorithms)
    for (row, quant), by_algorithm in sorted(gaps.items()):
        cells = []
        for algorithm in algorithms:
            values = by_algorithm.get(algorithm)
            if not values:
                cells.append("--")
                continue
            mean, std = _mean_std(values)
            spread = f" ± {std:.2f}" if len(values) > 1 else ""
            cells.append(f"{mean:+.2f}{spread} (n={len(values)})")
        lines.append(f"| {row} | {quant} | " + " | ".join(cells) + " |")
    return lines


def write_tables(table: list[dict[str, Any]], out_dir: Path,
                 summaries: list[dict[str, Any]] | None = None) -> tuple[Path, Path]:
    md = out_dir / "report.md"
    header = ("| row | quant | algorithm | seeds | FP32 acc (%) | quantized acc (%) | delta (points) "
              "| pre-bake (latent) acc (%) | bake cost (points) | memory | SynOps / inference "
              "| energy / inference (µJ) |")
    lines = [header, "|" + "---|" * 12]
    for e in table:
        lines.append(f"| {e['row']} | {e['quant']} | {e['algorithm']} | {e['seeds']} | "
                     + " | ".join(_fmt(e, key) for key in NUMBERS) + " |")
    comparison = side_by_side(table)
    if comparison:
        lines += ["", "Algorithms side by side: quantized accuracy (%) over seeds (delta to FP32, "
                  "points); the best mean in bold.", "", *comparison]
    gaps = against_reference(summaries or [])
    if gaps:
        lines += ["", "At equal training: quantized accuracy minus that of the FP32 network "
                  "fine-tuned as long from the same checkpoint (fp32 / finetune), paired by seed "
                  "(points, mean ± std over the n seeds both ran).", "", *gaps]
    md.write_text("\n".join(lines) + "\n")
    path = out_dir / "report.csv"
    fields = [*COLUMNS, *(f"{key}_std" for key in NUMBERS)]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows({k: e[k] for k in fields} for e in table)
    return md, path


def _layer_weights(path: Path, layers: list[str]) -> list[float]:
    from cbpqsnn.checkpoints import read_checkpoint

    state = read_checkpoint(path)
    state = state.get("state_dict", state)
    values = []
    for layer in layers:
        key = next((k for k in (f"{layer}.weight", f"{layer}.parametrizations.weight.original")
                    if k in state), None)
        if key is not None:
            values += state[key].flatten().tolist()
    return values


def write_plots(runs: list[tuple[Path, dict[str, Any]]], table: list[dict[str, Any]],
                out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    # accuracy FP32 vs quantized per (row, quant)
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(table)), 3.5))
    labels = [f"{e['row']}\n{e['quant']}/{e['algorithm']}" for e in table]
    xs = range(len(table))
    ax.bar([x - 0.2 for x in xs], [e["fp32_acc"] for e in table], 0.4,
           yerr=[e["fp32_acc_std"] for e in table], label="FP32")
    ax.bar([x + 0.2 for x in xs], [e["quant_acc"] for e in table], 0.4,
           yerr=[e["quant_acc_std"] for e in table], label="quantized")
    lows = [min(e["fp32_acc"], e["quant_acc"]) for e in table]
    ax.set_ylim(max(0.0, min(lows) - 5), 100)
    ax.set_xticks(list(xs), labels, fontsize=7)
    ax.set_ylabel("test accuracy (%)")
    ax.legend()
    written.append(_save_figure(fig, out_dir / "accuracy.png"))
    # CFS and g per epoch of every quantized run
    curves = [(d, s) for d, s in runs if s.get("history", {}).get("epoch")]
    if curves:
        fig, (ax_cfs, ax_g) = plt.subplots(1, 2, figsize=(9, 3.5))
        for run_dir, s in curves:
            h = s["history"]
            epochs = [e + 1 for e in range(len(h["cfs"]))]
            ax_cfs.plot(epochs, h["cfs"], label=run_dir.name)
            ax_g.step(epochs, h["g"], where="post", label=run_dir.name)
        ax_cfs.set(xlabel="CBP epoch", ylabel="CFS", yscale="log" if all(
            c > 0 for _, s in curves for c in s["history"]["cfs"]) else "linear")
        ax_g.set(xlabel="CBP epoch", ylabel="window g")
        ax_g.legend(fontsize=6)
        written.append(_save_figure(fig, out_dir / "cbp_curves.png"))
    if len({_label(s) for _, s in curves}) > 1:
        written.append(_cfs_by_algorithm(curves, out_dir))
    traced = [(d, s) for d, s in runs if s.get("trace", {}).get("step")]
    if traced:
        written.append(_traces(traced, out_dir))
    # weight histograms of the quantized layers: pretrained vs latent at the end of CBP
    for run_dir, s in curves:
        before = Path(s.get("fp32_checkpoint", ""))
        after = run_dir / "checkpoints" / "cbp.ckpt"
        if not (before.is_file() and after.is_file()):
            continue
        layers = s.get("quantized_layers", [])
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for path, label in ((before, "pretrained FP32"), (after, "latent after CBP")):
            values = _layer_weights(path, layers)
            if values:
                ax.hist(values, bins=120, alpha=0.6, label=label)
        ax.set(xlabel="weight", ylabel="count", yscale="log",
               title=f"{run_dir.name}: quantized layers")
        ax.legend(fontsize=7)
        written.append(_save_figure(fig, out_dir / f"weights_{run_dir.name}.png"))
    return written


def _cfs_by_algorithm(curves: list[tuple[Path, dict[str, Any]]], out_dir: Path) -> Path:
    """One panel per (row, level set), one line per algorithm: the CFS of the latent weights per
    epoch (mean over seeds) -- how far each algorithm's latents are from the levels."""
    import matplotlib.pyplot as plt

    by_panel: dict[tuple[str, str], dict[str, list[list[float]]]] = defaultdict(lambda: defaultdict(list))
    for _, s in curves:
        by_panel[(_row(s), s["quant"])][_label(s)].append(s["history"]["cfs"])
    panels = sorted(by_panel)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for label in sorted(by_panel[panel], key=label_order):
            histories = by_panel[panel][label]
            length = min(len(h) for h in histories)
            mean = [statistics.fmean(h[i] for h in histories) for i in range(length)]
            base = label.split("@", 1)[0]
            color = f"C{ALGORITHMS.index(base)}" if base in ALGORITHMS else None
            ax.plot(range(1, length + 1), mean, marker="o", markersize=3, label=label, color=color,
                    linestyle="--" if "@" in label else "-")
        ax.set(xlabel="fine-tuning epoch", ylabel="CFS (mean over seeds)", title=" / ".join(panel))
        ax.legend(fontsize=7)
    return _save_figure(fig, out_dir / "cfs_by_algorithm.png")


def _traces(runs: list[tuple[Path, dict[str, Any]]], out_dir: Path) -> Path:
    """The per-step trace (``trace_every``) of every run that has one: CFS and the fraction of
    quantized weights within a tenth of the scale of their level, against the optimizer step."""
    import matplotlib.pyplot as plt

    fig, (ax_cfs, ax_near) = plt.subplots(1, 2, figsize=(11, 4.5))
    colors = plt.get_cmap("tab20" if len(runs) > 10 else "tab10").colors
    for (run_dir, s), color in zip(sorted(runs, key=lambda r: r[0].name), colors * len(runs), strict=False):
        trace = s["trace"]
        ax_cfs.plot(trace["step"], trace["cfs"], color=color, label=run_dir.name)
        ax_near.plot(trace["step"], trace["near"], color=color, label=run_dir.name)
    ax_cfs.set(xlabel="fine-tuning step", ylabel="CFS", yscale="log")
    ax_near.set(xlabel="fine-tuning step", ylabel="fraction within a/10 of a level", ylim=(0, 1))
    ax_near.legend(fontsize=6)
    return _save_figure(fig, out_dir / "cbp_trace.png")


def _save_figure(fig: Any, path: Path) -> Path:
    """Lay out, write (120 dpi) and close a figure; returns its path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report_sweep(sweep_dir: str | Path, out_dir: str | Path | None = None,
                 plots: bool = True) -> dict[str, Any]:
    """Read every ``summary.json`` in ``sweep_dir``; write ``report.md``, ``report.csv`` and
    plots into ``out_dir`` (default: the sweep folder). Returns the table and file paths."""
    runs = load_summaries(sweep_dir)
    out = Path(out_dir) if out_dir is not None else Path(sweep_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = aggregate([s for _, s in runs])
    md, csv_path = write_tables(table, out, [s for _, s in runs])
    figures = write_plots(runs, table, out) if plots else []
    return {"table": table, "markdown": md, "csv": csv_path, "plots": figures, "runs": len(runs)}
