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
