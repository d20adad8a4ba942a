"""``shopml privacy ...``: erase shoppers on request and prove it (docs/privacy.md)."""

from __future__ import annotations

import getpass
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from pipelines.cli.app import app, out_console, reports_errors
from pipelines.settings import load_settings

privacy_app = typer.Typer(
    help="Shoppers' privacy: erase on request, and audit every store for traces.",
    no_args_is_help=True,
)
app.add_typer(privacy_app, name="privacy")

UserIds = Annotated[
    list[str], typer.Argument(help="The shoppers' ids as the shop knows them.", show_default=False)
]


@privacy_app.command("forget")
@reports_errors
def forget_cmd(
    user_ids: UserIds,
    reason: Annotated[
        str, typer.Option(help="Why (e.g. 'GDPR Art. 17 request #123'); recorded in the ledger.")
    ],
    requested_by: Annotated[
        str | None,
        typer.Option(help="Who asked (recorded in the ledger; default: your login)."),
    ] = None,
) -> None:
    """Erase shoppers: on the erasure list at once, then removed from every store on this
    machine, the promoted versions in the serving bucket and MLflow's artifacts; the
    erasure ledger records who, when, why and how many rows, never the ids."""
    from pipelines.privacy.forget import forget

    report = forget(
        user_ids,
        reason=reason,
        requested_by=requested_by or getpass.getuser(),
        settings=load_settings(),
    )
    table = Table("store", "removed", box=None)
    for store, n in report.stores.items():
        table.add_row(store, f"{n:,}")
    out_console.print(
        f"erasure request {report.request_seq} completed (ledger entry "
        f"{report.completed_seq}): {report.shoppers} shopper(s)"
    )
    out_console.print(table)
    for folder, new in report.rewritten.items():
        accepted = report.revalidated.get(folder)
        state = "" if accepted is None else (", validated" if accepted else ", QUARANTINED")
        out_console.print(f"  snapshot {escape(folder)} is now {new[:12]}{state}")
    for version in report.bundles:
        out_console.print(f"  promoted {escape(version)} rewritten (an erase entry in its ledger)")
    for line in report.pending:
        out_console.print(f"  [yellow]pending[/]: {escape(line)}")


@privacy_app.command("audit")
@reports_errors
def audit_cmd(user_ids: UserIds) -> None:
    """Search every store for traces of shoppers (exit 1 when one is found)."""
    from pipelines.privacy.audit import audit

    report = audit(user_ids, load_settings())
    if report.traces:
        table = Table("store", "where", "traces", box=None)
        for store, where, n in report.traces:
            table.add_row(store, escape(where), f"{n:,}")
        out_console.print(table)
    out_console.print(
        f"{len(report.traces)} location(s) with traces in {report.files:,} files and the "
        f"online store ({report.forms} stored form(s) of {len(user_ids)} id(s))"
    )
    if report.unreadable:
        out_console.print(f"  not readable by the audit: {len(report.unreadable)} binary file(s)")
    for line in report.not_searched:
        out_console.print(f"  not searched: {escape(line)}")
    if report.traces:
        raise typer.Exit(1)
