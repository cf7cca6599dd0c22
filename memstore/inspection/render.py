"""The rich rendering of a store summary (`memloss inspect-store`): tables that fit 80 columns."""

from __future__ import annotations

from typing import Any


def render_summary(summary: dict[str, Any]) -> Any:
    """A rich renderable (tables that fit 80 columns) of a `summarize` result. Terms: the store is a ring of K+1
    *ring slots*; each holds the perturbations of one epoch (the memory of age k in epoch n is epoch n−k)."""
    from rich.console import Group
    from rich.table import Table

    head = Table(title=f"memory store {summary['url']}", show_header=False)
    d, t, lay = summary["dataset"], summary["threat"], summary["layout"]
    ratio = summary["ratio_vs_float32"]
    rows = [
        ("format", f"{summary['format']} v{summary['format_version']} (memloss {summary['memloss_version']})"),
        ("dataset", f"{d['name']}, N = {d['n']}, shape {tuple(d['shape'])}" + (
            f" ({summary['parts'][0]} base + {summary['parts'][1]} generated)" if len(summary["parts"]) > 1 else "")),
        ("labels sha256", d["labels_sha256"][:16]),
        ("threat model", f"{t['norm']} ε = {t['eps']} ({t['eps_float']:.6g})"),
        ("K / ring slots", f"{summary['k']} / {summary['slots']}"),
        ("committed epochs", ", ".join(map(str, summary["committed_epochs"])) or "none"),
        ("bytes on disk", f"{_size(summary['bytes_on_disk'])} ({ratio}x smaller than float32)" if ratio
         else _size(summary["bytes_on_disk"])),
        ("layout", f"{lay['num_blocks']} blocks of {lay['block_size']} samples"),
        ("codecs", str(lay["codecs"])),
    ]
    for key, value in rows:
        head.add_row(key, str(value))
    slots = Table(title="ring slots (one epoch each)", caption=summary.get("stats_note"))
    cols = {"slot": "ring\nslot", "epoch": "holds\nepoch", "valid_entries": "valid\nrows",
            "bytes_per_coord": "bytes/\ncoord", "ratio_vs_float32": "vs\nf32", "mean_abs_delta_over_eps": "mean\n|δ|/ε",
            "at_eps_fraction": "at ±ε", "code_entropy_bits": "H(code)\nbits"}
    for label in cols.values():
        slots.add_column(label, justify="right")
    for s in summary["per_slot"]:
        slots.add_row(*(_cell(s[c]) for c in cols))
    if len(summary["parts"]) == 1:
        return Group(head, slots)
    return Group(head, slots, _parts_table(summary))


def _parts_table(summary: dict[str, Any]) -> Any:
    """Per ring slot, the rows of each part that hold memory of its epoch (an epoch visits every base sample but
    only some generated ones: the others have no memory from it)."""
    from rich.table import Table

    table = Table(title="rows holding memory, per part")
    for label in ("ring\nslot", "holds\nepoch", "base rows", "generated rows"):
        table.add_column(label, justify="right")
    for s in summary["per_slot"]:
        cells = [f"{v} ({100 * v / n:.1f}%)" for v, n in zip(s["valid_by_part"], summary["parts"])]
        table.add_row(str(s["slot"]), _cell(s["epoch"]), *cells)
    return table


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _size(nbytes: int) -> str:
    for unit, factor in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= factor:
            return f"{nbytes / factor:.2f} {unit} ({nbytes:,} B)"
    return f"{nbytes} B"
