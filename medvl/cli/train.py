"""``medvl pretrain``, ``medvl finetune`` and ``medvl merge-lora``.

Training commands run the same code on one CPU, one GPU or many GPUs; for data parallelism
start them with ``accelerate launch --no_python medvl pretrain ...`` or
``torchrun --nproc_per_node N --no-python medvl pretrain ...``. Re-running a command resumes
an interrupted run from its newest checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import typer

from medvl.cli.common import (
    CONFIG_OPTION,
    OVERRIDES_ARGUMENT,
    echo_main,
    exit_on_error,
    job_config,
    setup_logging,
)

VERBOSE_OPTION = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level.")


def pretrain_command(
    config: Path | None = CONFIG_OPTION,
    overrides: list[str] | None = OVERRIDES_ARGUMENT,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Domain-adaptive pretraining: chained MLM and contrastive stages (see configs/).

    Example: medvl pretrain -c configs/dapt_phantom.yaml output_dir=runs/dapt train.lr=1e-4
    (train.KEY=... sets KEY in every stage; stages.mlm.train.KEY=... or stages.0.train.KEY=...
    in one stage; later overrides win)
    """
    from medvl.train.pretrain import PretrainConfig, pretrain

    setup_logging(verbose)
    cfg = job_config(PretrainConfig, config, overrides)
    with exit_on_error():
        summary = pretrain(cfg)
    for stage in summary["stages"]:
        before, after = stage.get("before", {}), stage.get("after", {})
        shown = [k for k in ("mlm_loss", "ssl_loss", "zeroshot_auroc", "i2t_R@5") if k in after]
        numbers = ", ".join(
            f"{k} {before.get(k, float('nan')):.4f} -> {after[k]:.4f}" for k in shown
        )
        echo_main(f"{stage['name']}: {numbers}")
    echo_main(f"model: {summary['final_model']}")


def finetune_command(
    config: Path | None = CONFIG_OPTION,
    overrides: list[str] | None = OVERRIDES_ARGUMENT,
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Fine-tune for findings: mode=zero_shot|linear_probe|projection|prompt_learning|lora|
    partial|full (see configs/).

    Example: medvl finetune -c configs/lora_findings.yaml few_shot.k=16
    """
    from medvl.train.finetune import FinetuneConfig, finetune

    setup_logging(verbose)
    cfg = job_config(FinetuneConfig, config, overrides)
    with exit_on_error():
        result = finetune(cfg)
    auroc = result["macro_auroc"]
    echo_main(
        f"{result['mode']}: macro AUROC {auroc if auroc is None else round(auroc, 4)} on "
        f"{result['eval_split']}, {result['trainable_parameters']:,} trainable parameters, "
        f"{result['wall_time_s']:.1f} s -> {cfg.output_dir / 'metrics.json'}"
    )


def merge_lora_command(
    model: Path = typer.Option(..., "--model", help="Saved base aligner directory."),
    adapter: Path = typer.Option(..., "--adapter", help="LoRA adapter directory."),
    out: Path = typer.Option(..., "--out", help="Where to save the merged aligner."),
    verbose: bool = VERBOSE_OPTION,
) -> None:
    """Merge a LoRA adapter into its base aligner for deployment (no peft at inference)."""
    from medvl.models.lora import merge_lora

    setup_logging(verbose)
    with exit_on_error():
        merge_lora(model, adapter, out)
    echo_main(f"merged aligner: {out}")


def register(app: typer.Typer) -> None:
    """Attach the training commands to the ``medvl`` app."""
    app.command("pretrain")(pretrain_command)
    app.command("finetune")(finetune_command)
    app.command("merge-lora")(merge_lora_command)
