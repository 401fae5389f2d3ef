"""The `data` commands (generate, import, summarise, version, pull, validate) and `attributes`.

Each command is a thin shell over a library function of this package; heavy imports (DVC, Great
Expectations, torch) happen inside the commands, so `omniretriever --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from model.cli import ModelDirOption, SplitOption, WorkersOption
from model.cli_errors import exits_on, fail

app = typer.Typer(help="Generate, summarise, version and validate datasets.", no_args_is_help=True)
# `attributes` reads a generated dataset's latent scenes: the console script mounts it at the top level
attributes_app = typer.Typer()


@app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option("--out", help="Dataset root to create (manifests/, videos/, scenes/).")] = Path("data"),
    train: Annotated[int, typer.Option(help="Number of training clips.")] = 3000,
    val: Annotated[int, typer.Option(help="Number of validation clips.")] = 300,
    test: Annotated[int, typer.Option(help="Number of test clips (the retrieval gallery).")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives byte-identical files.")] = 0,
    train_captions: Annotated[int, typer.Option(
        help="Captions per training clip: the manifest's text plus alt_texts (val and test clips have one).")] = 6,
    workers: Annotated[Optional[int], typer.Option(help="Worker processes (default: all cores).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing dataset at --out.")] = False,
    if_missing: Annotated[bool, typer.Option("--if-missing", help="Do nothing when --out already holds this exact dataset.")] = False,
) -> None:
    """Generate the synthetic audio-video-text benchmark in the OmniRetriever-Bench layout."""
    from dataset import synth
    from dataset.config import SynthConfig
    from dataset.summary import print_summary, summarize

    with exits_on(ValueError):
        config = SynthConfig(train=train, val=val, test=test, seed=seed, train_captions=train_captions)
    if if_missing and synth.is_up_to_date(out, config):
        typer.echo(f"{out}: up to date (seed {seed}, {train}/{val}/{test} clips); not regenerated")
        print_summary(summarize(out))
        return
    with exits_on(FileExistsError, ValueError):
        summary = synth.synthesize(out, config, workers=workers, overwrite=overwrite)
    print_summary(summary)


@app.command("summary")
def data_summary(
    data: Annotated[Path, typer.Argument(help="Dataset root.")] = Path("data"),
) -> None:
    """Print split sizes, durations, attribute balance and near-duplicate statistics of a dataset."""
    from dataset.summary import print_summary, summarize
    from model.errors import OmniRetrieverError

    if not (data / "manifests").is_dir():
        fail(f"{data} has no manifests/ directory: not a dataset root (generate one with `omniretriever data synth`)")
    with exits_on(OmniRetrieverError):
        print_summary(summarize(data))


@app.command("version")
def data_version(
    data: Annotated[Path, typer.Argument(help="Dataset directory inside the DVC project (DIR.dvc is written beside it).")] = Path("data"),
    remote: Annotated[Optional[str], typer.Option(help="DVC remote name, or a URL/directory for this call (default: the project's default remote).")] = None,
) -> None:
    """Record DIR's version with DVC (dvc add + push); prints the version, the md5 of DVC's listing."""
    from model.errors import OmniRetrieverError
    from dataset.versioning import version_data

    with exits_on(OmniRetrieverError):
        version = version_data(data, remote)
    _echo_version(data, version)


@app.command("pull")
def data_pull(
    data: Annotated[Path, typer.Argument(help="Dataset directory tracked by DIR.dvc.")] = Path("data"),
    remote: Annotated[Optional[str], typer.Option(help="DVC remote name, or a URL/directory for this call (default: the project's default remote).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Generator processes if it must be regenerated (default: all cores).")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Refuse (exit 2) when DIR cannot be made to match DIR.dvc, "
                                         "instead of going on with the data under its own version.")] = False,
) -> None:
    """Make DIR match DIR.dvc: nothing if it does, else pull it, else regenerate it from its recipe, check and push.

    When DIR cannot match (a regeneration with other bytes, data changed after versioning), one warning
    names the files that differ and DIR is used under its own version; --strict refuses instead."""
    from model.errors import OmniRetrieverError
    from dataset.versioning import pull_data

    with exits_on(OmniRetrieverError):
        version = pull_data(data, remote, workers=workers, strict=strict)
    for note in version.notes:
        typer.secho(f"note: {note}", fg=typer.colors.YELLOW, err=True)
    if version.warning:
        typer.secho(f"warning: {version.warning}", fg=typer.colors.YELLOW, err=True)
    _echo_version(data, version)


def _echo_version(data: Path, version) -> None:
    pushed = f"; pushed {version.pushed} files" if version.pushed else ""
    typer.echo(f"{data}: {version.action}, {version.nfiles} files, {version.size / 1e6:.1f} MB "
               f"({version.dvc_file.name}){pushed}")
    recorded = f" ({version.dvc_file.name} records {version.recorded})" if version.recorded else ""
    typer.echo(f"version: {version.md5}{recorded}")


@app.command("import")
def data_import(
    fmt: Annotated[str, typer.Argument(metavar="FORMAT", help="folder (a media folder and --captions), or a public "
                                       "benchmark's release: omniretriever-bench, msrvtt (1k-A), msrvtt-full, msvd, "
                                       "didemo, vatex, clotho, sounddescs, audiocaps.")],
    src: Annotated[Path, typer.Argument(help="The directory the release unpacks to (folder: the media folder).")],
    out: Annotated[Path, typer.Option("--out", help="Dataset root to write (manifests/, media/, import.json).")],
    captions: Annotated[Optional[Path], typer.Option(help="folder: the CSV or JSONL of file, caption[, id, split...].")] = None,
    split: Annotated[str, typer.Option(help="folder: the split of rows that name none.")] = "test",
    media: Annotated[str, typer.Option(help="copy the media, or link it (a hard link; a copy across file systems).")] = "copy",
) -> None:
    """Import a media library or a public benchmark into this project's layout; every caption is kept, items
    lacking video or audio say so (null), and what was skipped is listed with its reason in import.json.
    Exit 0 every item imported, 3 some skipped, 2 nothing importable or a bad source."""
    from dataset.importers import FORMATS, ImportOptions, import_dataset
    from dataset.importers.base import NothingImported
    from model.errors import OmniRetrieverError

    if fmt not in FORMATS:
        fail(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
    try:
        report = import_dataset(fmt, src, out, ImportOptions(captions=captions, split=split, media=media))
    except NothingImported as exc:
        for skip in exc.skipped[:5]:
            typer.secho(f"skipped {skip.where} ({skip.id or 'no id'}): {skip.reason}", fg=typer.colors.YELLOW, err=True)
        fail(f"{exc}; {out} was not written")
    except (OmniRetrieverError, ValueError, FileExistsError) as exc:
        fail(str(exc))
    total = sum(report.items.values())
    typer.echo(f"imported {total} items ({report.captions} captions) into {report.out}: "
               + ", ".join(f"{k} {v}" for k, v in report.items.items())
               + "; modalities " + ", ".join(f"{k} {v}" for k, v in report.modalities.items()))
    if report.skipped:
        for skip in report.skipped[:5]:
            typer.secho(f"skipped {skip.where} ({skip.id or 'no id'}): {skip.reason}", fg=typer.colors.YELLOW, err=True)
        more = f" (and {len(report.skipped) - 5} more)" if len(report.skipped) > 5 else ""
        typer.secho(f"skipped {len(report.skipped)} in all{more}; each is listed in {report.out / 'import.json'}",
                    fg=typer.colors.YELLOW, err=True)
    if report.skipped:
        raise typer.Exit(3)


@app.command("validate")
def data_validate(
    data: Annotated[Path, typer.Argument(help="Dataset root (manifests/<split>.jsonl, media under it).")] = Path("data"),
    split: Annotated[Optional[str], typer.Option(help="Split to validate (default: every manifests/*.jsonl).")] = None,
    report: Annotated[Path, typer.Option(help="Report directory: summary.json, validated.jsonl, rejected.jsonl, data_docs/.")] = Path("runs/validation"),
    max_rejected: Annotated[float, typer.Option(help="Exit 1 when more than this fraction of records is rejected.")] = 0.0,
    min_seconds: Annotated[Optional[float], typer.Option(help="Shortest clip accepted, seconds [default: 1].")] = None,
    max_seconds: Annotated[Optional[float], typer.Option(
        help="Longest clip accepted, seconds [default: the shared media limit, 60].")] = None,
    min_audio_rms: Annotated[Optional[float], typer.Option(help="Audio RMS (full scale 1.0) below this is silence [default: 0.001].")] = None,
    max_caption_chars: Annotated[Optional[int], typer.Option(help="Longest caption accepted, characters [default: 500].")] = None,
    allow_partial: Annotated[bool, typer.Option(
        "--allow-partial", help='The dataset may hold items without video or without audio ("video": null, '
        'or a file without that stream); validated.jsonl writes null for what an item lacks.')] = False,
    workers: Annotated[Optional[int], typer.Option(help="Probe processes (default: all cores).")] = None,
) -> None:
    """Probe every triple and run the Great Expectations suite; exit 0 pass, 1 too many rejected, 2 unreadable."""
    from model.errors import OmniRetrieverError
    from dataset.rules import Thresholds
    from dataset.validation import validate

    with exits_on(OmniRetrieverError, ValueError):
        given = {"min_seconds": min_seconds, "max_seconds": max_seconds, "min_audio_rms": min_audio_rms,
                 "max_caption_chars": max_caption_chars}
        thresholds = Thresholds(**{k: v for k, v in given.items() if v is not None}, allow_partial=allow_partial)
        result = validate(data, report, split, max_rejected, thresholds=thresholds, workers=workers)
    _print_validation(result, max_rejected)
    if not result.passed:
        raise typer.Exit(1)


def _print_validation(result, max_rejected: float) -> None:
    from rich.console import Console
    from rich.table import Table

    if result.failed_expectations:
        table = Table(title="Failed expectations")
        for col in ("check", "records", "first ids", "reason"):
            table.add_column(col, justify="right" if col == "records" else "left")
        for name, entry in result.failed_expectations.items():
            ids = ", ".join((entry["ids"] or entry["rows"])[:3]) + (" ..." if entry["count"] > 3 else "")
            table.add_row(name, str(entry["count"]), ids, entry.get("error") or entry["reason"])
        Console().print(table)
    typer.echo(f"{result.total} records: {result.validated} validated, {result.rejected} rejected "
               f"({result.rejected_fraction:.1%}; allowed {max_rejected:.1%})")
    kinds = {"tva": "with video and audio", "tv": "video-only", "at": "audio-only"}
    if set(result.modalities) - {"tva"}:  # a dataset of partial items: say how many of each
        typer.echo("validated: " + ", ".join(f"{n} {kinds.get(view, view)}" for view, n in result.modalities.items()))
    for name, error in result.errors.items():
        typer.secho(f"expectation {name} errored: {error}", fg=typer.colors.RED, err=True)
    typer.echo(f"report: {result.summary.parent}  data docs: {result.data_docs}")
    if not result.passed:
        typer.secho("validation FAILED", fg=typer.colors.RED, err=True)


@attributes_app.command("attributes")
def attributes_cmd(
    model: ModelDirOption = Path("runs/latest"),
    data: Annotated[Path, typer.Option(help="A dataset written by `omniretriever data synth` (its scenes/ are read).")] = Path("data"),
    split: SplitOption = "test",
    out: Annotated[Optional[Path], typer.Option(help="JSON path (default: MODEL/attributes.json).")] = None,
    workers: WorkersOption = None,
) -> None:
    """Per direction, how often the top-1 result shares each latent scene attribute with its query, beside chance."""
    from dataset.attributes import agreement, print_agreement
    from model.errors import OmniRetrieverError

    out = out or (model / "attributes.json")
    with exits_on(OmniRetrieverError, ValueError, FileNotFoundError):
        result = agreement(model, data, split, out, workers=workers)
    print_agreement(result)
    typer.echo(f"attributes: {out}")
