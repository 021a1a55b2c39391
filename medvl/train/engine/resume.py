"""Save and restore everything a run needs to continue exactly where it stopped.

A resumable checkpoint (see :mod:`medvl.train.engine.checkpoint` for the files) holds the model, the
optimizer, the LR scheduler, the grad scaler, each process's RNG states and the data position
(epoch, batches consumed in it). :func:`resume_training_state` puts all of it back and returns
the RNG states for the engine to apply at the right moment: after the data loader has been
re-created, so the loader's own seeding draws do not shift the model's random stream.
:func:`resume_newest_intact` is ``resume="auto"``: the newest checkpoint that is intact, each
damaged newer one skipped with a warning saying which and why.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medvl.train.engine.checkpoint import (
    CheckpointError,
    CheckpointManager,
    checkpoint_problem,
    load_model_weights,
    load_optim_state,
    load_rng,
    read_state,
    step_dir_name,
)
from medvl.train.engine.config import TrainProgress

logger = logging.getLogger(__name__)


def save_training_state(
    ckpt: CheckpointManager,
    accelerator: Any,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    state: dict[str, Any],
) -> Path:
    """Write the resumable checkpoint ``step-<state["step"]>`` on every process."""
    scaler = accelerator.scaler
    optim_state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
    }
    unwrapped = accelerator.unwrap_model(model)
    return ckpt.save(step_dir_name(state["step"]), unwrapped, state, optim_state)


def resume_training_state(
    path: Path,
    accelerator: Any,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    batches_per_epoch: int,
) -> tuple[TrainProgress, dict[str, Any] | None]:
    """Restore a run from checkpoint ``path``; returns its progress and this rank's RNG states.

    The scheduler's own schedule settings win over the saved ones, so a run extended with a
    larger ``max_steps`` decays over its new length (a warning says so).
    """
    state = read_state(path)
    load_model_weights(accelerator.unwrap_model(model), path)
    optim = load_optim_state(path)
    optimizer.load_state_dict(optim["optimizer"])
    current = [dict(vars(fn)) for fn in scheduler.lr_lambdas]
    scheduler.load_state_dict(optim["scheduler"])  # overwrites the lambdas' settings too
    if [vars(fn) for fn in scheduler.lr_lambdas] != current:
        logger.warning("%s: LR schedule differs from the checkpoint's; following the new one", path)
    for fn, settings in zip(scheduler.lr_lambdas, current, strict=True):
        fn.__dict__.update(settings)
    lrs = [
        base * fn(scheduler.last_epoch)
        for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)
    ]
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    scheduler._last_lr = lrs
    if accelerator.scaler is not None and optim.get("scaler"):
        accelerator.scaler.load_state_dict(optim["scaler"])
    prog = TrainProgress(**{k: state[k] for k in vars(TrainProgress()) if k in state})
    world, saved_world = accelerator.num_processes, int(state.get("num_processes", 1))
    if saved_world != world:
        logger.warning(
            "%s: written by %d processes, resuming with %d; data position rescaled and RNG "
            "streams re-seeded, so the trajectory will differ slightly",
            path,
            saved_world,
            world,
        )
        prog.batch_in_epoch = prog.batch_in_epoch * saved_world // world
    if prog.batch_in_epoch >= batches_per_epoch:
        prog.epoch, prog.batch_in_epoch = prog.epoch + 1, 0
    logger.info(
        "resumed from %s (step %d, epoch %d, batch %d)",
        path,
        prog.step,
        prog.epoch,
        prog.batch_in_epoch,
    )
    rng = load_rng(path, accelerator.process_index) if saved_world == world else None
    return prog, rng


def resume_newest_intact(
    ckpt: CheckpointManager,
    accelerator: Any,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    batches_per_epoch: int,
) -> tuple[TrainProgress, dict[str, Any] | None]:
    """Resume from the newest intact step checkpoint (a fresh start when there is none).

    A checkpoint whose files no longer match their recorded SHA-256, or that fails to load,
    is skipped with a warning naming it and the reason; a later load overwrites whatever a
    failed one had put into the model and optimizer.

    Raises
    ------
    CheckpointError
        Checkpoints exist but none is intact (starting over would silently discard them).
    """
    candidates = ckpt.step_checkpoints()
    problems: list[str] = []
    for path in reversed(candidates):
        problem = checkpoint_problem(path)
        if problem is None:
            try:
                return resume_training_state(
                    path, accelerator, model, optimizer, scheduler, batches_per_epoch
                )
            except CheckpointError as err:
                problem = str(err)
        problems.append(problem)
        logger.warning("checkpoint %s skipped: %s", path.name, problem)
    if candidates:  # the newest one's problem: a changed config (shapes) reads as a load failure
        more = f"; {len(problems) - 1} older ones fail too" if len(problems) > 1 else ""
        raise CheckpointError(
            f"{ckpt.root}: no intact checkpoint to resume from (the newest: {problems[0]}{more});"
            " set train.resume=never to start over"
        )
    return TrainProgress(), None
