"""What ``genrec recommend``, ``genrec export`` and ``genrec serve`` do (``genrec_core/cli.py``
declares their options). User errors print one line and exit with status 2, no traceback."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

from genrec_core.errors import GenrecError


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(code=2)


def _log_warnings() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _load(model: Path, params: Path | None, device: str):
    from genrec_core.runtime import resolve_device
    from genrec_core.serving.api import ServingModel

    return ServingModel.load(model, device=resolve_device(device), params_file=params)


def print_table(result) -> None:
    """rank, item_id, title, score: one line per item (a '#' note first for a fallback or skipped ids)."""
    rows = [(str(i.rank), i.item_id, i.title or "", f"{i.score:.4f}") for i in result.items]
    header = ("rank", "item_id", "title", "score")
    widths = [max(len(h), *(len(r[c]) for r in rows)) if rows else len(h) for c, h in enumerate(header)]
    if result.fallback:
        typer.echo(f"# empty history: fallback {result.fallback} (the items most often seen in training; score = training count)")
    if result.skipped:
        typer.echo(f"# skipped unknown item ids: {', '.join(result.skipped)}")
    for r in (header, *rows):
        typer.echo("  ".join(v.rjust(w) if c in (0, 3) else v.ljust(w) for c, (v, w) in enumerate(zip(r, widths))).rstrip())


def recommend_command(
    history: str | None, input_: Path | None, output: Path | None, k: int, model: Path, user: str | None, skip_unknown: bool, params: Path | None, device: str
) -> None:
    _log_warnings()
    try:
        if (history is None) == (input_ is None):
            raise GenrecError("give exactly one of --history or --input")
        if input_ is not None and (output is None or output.suffix.lower() != ".parquet"):
            raise GenrecError("--input needs --output FILE.parquet")
        if input_ is None and output is not None:
            raise GenrecError("--output goes with --input")
        rec = _load(model, params, device)
        unknown = "skip" if skip_unknown else "error"
        if input_ is not None:
            from genrec_core.serving.batch_io import recommend_file, write_recommendations

            recs, users = recommend_file(rec, input_, k, unknown, progress=True)
            write_recommendations(recs, users, output)
            typer.echo(f"wrote {len(recs)} users' top {k} to {output}", err=True)
        else:
            from genrec_core.serving.batch_io import split_history

            print_table(rec.recommend_one(split_history(history), k, user, unknown))
    except GenrecError as exc:
        raise _fail(exc) from None


def export_command(out_dir: Path, root: Path, params: Path | None, force: bool) -> None:
    from genrec_core.serving.bundle import export_bundle

    _log_warnings()
    try:
        path = export_bundle(root, out_dir, params_file=params, force=force)
    except GenrecError as exc:
        raise _fail(exc) from None
    typer.echo(f"exported {path}")


def serve_command(
    bundle: Path,
    host: str,
    port: int,
    max_wait_ms: float,
    max_batch: int,
    device: str,
    *,
    limits: dict,
    allow_writes: bool = False,
    token_file: Path | None = None,
    allowed_hosts: list[str] | None = None,
    forwarded_allow_ips: str | None = None,
) -> None:
    """Check the options (limits, token, hosts) before loading the model, then serve."""
    _log_warnings()
    from genrec_core.serving.guard import TOKEN_ENV, read_token
    from genrec_core.serving.http import LOOPBACK_HOSTS
    from genrec_core.serving.limits import ServeLimits

    try:
        try:
            serve_limits = ServeLimits(**limits)
        except ValueError as exc:
            raise GenrecError(str(exc)) from None
        token = read_token(token_file)
        if allow_writes and token is None:
            raise GenrecError(f"--allow-writes needs a token: set {TOKEN_ENV} or pass --token-file FILE (clients then send `Authorization: Bearer <token>`)")
        if token is not None and not allow_writes:
            logging.getLogger(__name__).warning("a token is set but --allow-writes is not: POST /items stays off")
            token = None
        hosts = list(allowed_hosts) if allowed_hosts else [*LOOPBACK_HOSTS, *([host] if host not in (*LOOPBACK_HOSTS, "0.0.0.0", "::", "") else [])]
        rec = _load(bundle, None, device)
    except GenrecError as exc:
        raise _fail(exc) from None
    from genrec_core.serving.http import serve

    serve(
        rec,
        host=host,
        port=port,
        max_wait_ms=max_wait_ms,
        max_batch=max_batch,
        limits=serve_limits,
        write_token=token,
        allowed_hosts=hosts,
        forwarded_allow_ips=forwarded_allow_ips,
    )


def add_items_command(file: Path, bundle: Path, out: Path | None, device: str) -> None:
    """Read new items from FILE, give them IDs with the bundle's tokenizer, write the extended
    bundle (atomically; nothing is written when any item is refused)."""
    _log_warnings()
    try:
        from genrec_core.serving.bundle import MANIFEST, write_added_items
        from genrec_core.serving.new_items import read_items_file

        if not (bundle / MANIFEST).exists():
            raise GenrecError(f"{bundle}: not a genrec bundle (no {MANIFEST}); add-items extends an exported bundle (genrec export DIR)")
        records, lines = read_items_file(file)
        rec = _load(bundle, None, device)
        from genrec_core.serving.new_items import check_new_items

        # check the records with line numbers first (add_items checks them again, by position)
        spec = rec.meta.encoder or {}
        check_new_items(records, rec.catalog.index, spec.get("text_fields") or [], lines=lines)
        added = rec.add_items(records)
        path = write_added_items(rec, bundle, out)
    except GenrecError as exc:
        raise _fail(exc) from None
    moved = sum(added.moved)
    typer.echo(f"added {len(added.source_ids)} items to {path} (now {rec.num_items} items; {moved} moved off a taken ID)")
    for sid, codes in zip(added.source_ids, added.codes):
        typer.echo(f"{sid}\t{'-'.join(str(int(c)) for c in codes)}")
