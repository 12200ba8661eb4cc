"""The result of one kind of golden comparison, as `simscale check-golden` prints it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Mismatch:
    """One disagreement: `where` names the file and the scene / step / agent / cell, `what` the quantity."""

    where: str
    what: str
    ours: object = None
    golden: object = None

    def __str__(self) -> str:
        return f"MISMATCH {self.where}: {self.what} ours={self.ours!r} golden={self.golden!r}"


@dataclass
class CheckResult:
    """`compared` items of one kind (traces, score cells, plans, map queries, ...), their mismatches, and one
    agreement table per golden file (`tables[file] = (header, rows)`). `skipped` says why a kind was not checked."""

    kind: str
    compared: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    tables: dict = field(default_factory=dict)
    skipped: str | None = None
    # reported apart and never counted as mismatches (the traces' deviation with source openscene): `sections[name]`
    # = (title line, {file: (header, rows)}) in the text report, `summary[key]` = value in the JSON summary line
    sections: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)


def format_table(header, rows) -> list[str]:
    """Fixed-width text lines of one agreement table (first column left-aligned, the others right-aligned)."""
    cells = [[str(h) for h in header]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[k]) if k < len(r) else 0 for r in cells) for k in range(len(header))]
    out = []
    for r in cells:
        parts = [r[k].ljust(widths[k]) if k == 0 else r[k].rjust(widths[k]) for k in range(len(r))]
        out.append("  ".join(parts).rstrip())
    return out


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def format_results(kinds, results, max_mismatches: int = 200) -> list[str]:
    """The text report of `simscale check-golden`: per kind, its per-file agreement tables and its mismatches
    (the first `max_mismatches`, then a "... N more" line), and a "skipped: <kind>: <why>" line for a skipped kind.
    `kinds` names each result (the orchestrator's kind names, in the same order)."""
    lines: list[str] = []
    skipped = []
    for kind, r in zip(kinds, results):
        if r.skipped:
            skipped.append(f"skipped: {kind}: {r.skipped}")
        else:
            lines.append(f"== {kind}: {r.compared} compared, {len(r.mismatches)} mismatches")
            _tables(lines, r.tables)
            lines.extend(str(m) for m in r.mismatches[:max_mismatches])
            if len(r.mismatches) > max_mismatches:
                lines.append(f"... {len(r.mismatches) - max_mismatches} more {kind} mismatches")
        for name, (title, tables) in r.sections.items():
            lines.append(f"== {name}: {title}")
            _tables(lines, tables)
    return lines + skipped


def _tables(lines: list[str], tables: dict) -> None:
    for file, (header, rows) in tables.items():
        lines.append(f"-- {file}")
        lines.extend("   " + line for line in format_table(header, rows))
