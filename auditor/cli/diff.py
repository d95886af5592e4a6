"""``auditor diff PREVIOUS NEW``: drift between two audits, printed, written, and gated."""

from __future__ import annotations

from pathlib import Path

import typer

from auditor.cli.options import FailOn
from auditor.errors import EXIT_FINDINGS


def run(previous: Path, new: Path, out: Path | None, fail_on_new: FailOn, as_json: bool) -> None:
    from auditor import drift
    from auditor.emit import drift_md
    from auditor.publish import OutputSet

    changes = drift.drift(drift.load(previous), drift.load(new))
    if out is not None:
        with OutputSet(out) as staged:
            staged.write("drift.json", drift.dumps(changes))
            staged.write("drift.md", drift_md.render(changes))
    typer.echo(drift.dumps(changes).decode() if as_json else drift_md.terminal(changes), nl=not as_json)
    if fail_on_new is not FailOn.none and drift.opened_at_or_above(changes["summary"], fail_on_new.value):
        typer.echo(f"auditor: new findings at or above {fail_on_new.value}: failing (--fail-on-new)", err=True)
        raise typer.Exit(EXIT_FINDINGS)
