"""Human-readable results of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def print_summary(summary: dict[str, Any], run_dir: str | Path, console: Console | None = None) -> None:
    """Print the short results table of one run."""
    table = Table(title=f"{summary['method']} / {summary['data']} / {summary['model']} / "
                        f"{summary['quant']} ({summary['algorithm']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("FP32 test accuracy", f"{summary['fp32_acc']:.2f} %"),
        ("quantized test accuracy", f"{summary['quant_acc']:.2f} %"),
        ("difference", f"{summary['acc_delta']:+.2f} points"),
        ("levels ok / final CFS", f"{summary['levels_ok']} / {summary['cfs_final']:.3g}"),
        ("bits per quantized weight", str(summary["bits_per_weight"])),
        ("weight memory", f"{summary['weight_memory_bytes']:,} B of "
                          f"{summary['fp32_weight_memory_bytes']:,} B "
                          f"({100 * summary['memory_ratio']:.2f} %)"),
        ("final g", str(summary["g_final"])),
        ("epochs pretrain / CBP", f"{summary['epochs_pretrain']} / {summary['epochs_cbp']}"),
        ("wall time", f"{summary['wall_time_s']:.0f} s"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console = console or Console()
    console.print(table)
    console.print(f"artifacts: {run_dir}")
