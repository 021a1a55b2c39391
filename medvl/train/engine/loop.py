"""The one training engine of medvl: aligner pretraining, fine-tuning and SAM decoders use it.

Hugging Face Accelerate carries the device work, so a single CPU, one GPU and many GPUs
(``accelerate launch`` or ``torchrun``, also on CPU cores over gloo: see
:mod:`medvl.data.processes`) run the same code. A job supplies the model, a data
loader and two functions; the engine owns everything else: mixed precision, gradient
accumulation and clipping, warmup + cosine LR, discriminative LRs and freezing schedules,
atomic checkpoints with exact resume, early stopping, TensorBoard + ``metrics.jsonl``, tqdm on
the main process, and a hard stop on a non-finite loss.

How a job uses it::

    from medvl.train.engine import Engine, EngineConfig

    engine = Engine(EngineConfig(output_dir=Path("runs/seg"), max_steps=2000, lr=1e-4,
                                 warmup_steps=100, mixed_precision="bf16",
                                 checkpoint_every=500, best_metric="dice"))
    loader = engine.make_loader(train_set, collate_fn=collate)   # or any DataLoader

    def loss_fn(model, batch):            # call model(...) (its forward): DDP syncs through it
        out = model(batch["pixels"], batch["boxes"])
        loss = dice_bce(out, batch["masks"])
        return loss, {"dice_loss": ...}   # extra scalars to log (main process values)

    def eval_fn(model):                   # unwrapped model, eval mode, no_grad, every rank
        return {"dice": validate(model)}  # the main process's dict decides best/early stop

    result = engine.fit(model, loader, loss_fn, eval_fn,
                        after_step=lambda m: m.clamp_logit_scale_(),  # optional, unwrapped model
                        on_device=train_set.on_device)  # optional, batch on the device
    # result.final_loss, result.best_checkpoint, result.losses ...; `model` is trained in place

Discriminative LRs and freezing (see :mod:`medvl.train.engine.param_groups`)::

    blocks = ModelBlocks.from_modules(model, head=[model.head], blocks=model.encoder.layer)
    groups = discriminative_param_groups(blocks, lr=1e-3, layer_decay=0.5, weight_decay=0.01)
    freeze = FreezeSchedule(blocks, FreezeConfig("two_stage", head_steps=200, top_blocks=2))
    engine.fit(model, loader, loss_fn, eval_fn, param_groups=groups, freeze=freeze)

Resume: with ``resume="auto"`` a run whose ``output_dir`` holds checkpoints continues from the
newest one (model, optimizer, scheduler, grad scaler, RNG states, epoch and batch position), so
an interrupted run follows the same loss trajectory as an uninterrupted one. Exactness needs
the data side to be deterministic given the sample order (random augmentation seeded per
sample or, like ``BatchAugment`` in ``on_device``, by the batch's ids; or none); the sample
order itself is reproduced through Accelerate's seedable sampler. Each step makes one host sync
(its losses and gradient norm, checked finite before the update); logged extras stay on the
device until their row is written.

Steps are optimizer steps. ``batch_size`` is per process; the global batch is
``batch_size * num_processes * grad_accum``. ``fit`` calls ``model.train()`` once at the start;
a model that keeps parts in eval mode (frozen batch norm) overrides ``train()`` to do so.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from medvl.config import save_config
from medvl.data.processes import process_state
from medvl.train.engine.checkpoint import (
    CheckpointError,
    CheckpointManager,
    checkpoint_problem,
    restore_rng,
)
from medvl.train.engine.config import EngineConfig, NonFiniteLossError, TrainProgress, TrainResult
from medvl.train.engine.param_groups import FreezeSchedule, default_param_groups
from medvl.train.engine.resume import (
    resume_newest_intact,
    resume_training_state,
    save_training_state,
)
from medvl.train.engine.run_log import RunLogger
from medvl.train.engine.schedule import WarmupDecay

logger = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, Any], "tuple[torch.Tensor, dict[str, Any]]"]
EvalFn = Callable[[nn.Module], "dict[str, float] | None"]


def _make_accelerator(cfg: EngineConfig) -> Any:
    from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState

    process_state(cfg.cpu)  # one process group under torchrun / accelerate launch, also on CPU
    shared = AcceleratorState._shared_state
    if shared and shared.get("_mixed_precision") != cfg.mixed_precision:
        # A notebook or test process that trained before with another precision.
        AcceleratorState._reset_state()
    return Accelerator(
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.grad_accum,
        cpu=cfg.cpu,
        step_scheduler_with_optimizer=False,
        # non_blocking: batches from pinned memory copy to the GPU while the last step runs
        dataloader_config=DataLoaderConfiguration(
            use_seedable_sampler=True, data_seed=cfg.seed, non_blocking=True
        ),
        kwargs_handlers=[
            DistributedDataParallelKwargs(find_unused_parameters=cfg.find_unused_parameters)
        ],
    )


class Engine:
    """Runs :meth:`fit` for any model under one :class:`EngineConfig` (see module docstring)."""

    def __init__(self, config: EngineConfig) -> None:
        from accelerate.utils import set_seed

        if config.output_dir is None:
            raise ValueError(
                "EngineConfig.output_dir is not set: jobs set it from their output_dir; "
                "code that runs the engine alone must pass one"
            )
        self.config = config
        self.accelerator = _make_accelerator(config)
        set_seed(config.seed)

    @property
    def device(self) -> torch.device:
        """The device this process trains on."""
        return self.accelerator.device

    @property
    def is_main_process(self) -> bool:
        """Whether this is the process that writes files and logs."""
        return bool(self.accelerator.is_main_process)

    def make_loader(
        self,
        dataset: Dataset,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        shuffle: bool = True,
        drop_last: bool = False,
        batch_size: int | None = None,
    ) -> DataLoader:
        """A DataLoader with the config's per-process batch size, workers and seeded order."""
        workers = self.config.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size or self.config.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            collate_fn=collate_fn,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.config.seed),
        )

    def total_steps(self, batches_per_epoch: int) -> int:
        """Optimizer steps of the run for a loader of ``batches_per_epoch`` (per process)."""
        if self.config.max_steps:
            return self.config.max_steps
        return self.config.epochs * math.ceil(batches_per_epoch / self.config.grad_accum)

    def fit(
        self,
        model: nn.Module,
        train_loader: DataLoader,
        loss_fn: LossFn,
        eval_fn: EvalFn | None = None,
        param_groups: list[dict[str, Any]] | None = None,
        freeze: FreezeSchedule | None = None,
        after_step: Callable[[nn.Module], None] | None = None,
        on_device: Callable[[Any], Any] | None = None,
    ) -> TrainResult:
        """Train ``model`` to ``max_steps`` / ``epochs`` or an early stop (see module docstring).

        Parameters
        ----------
        model
            Trained in place; ``loss_fn`` receives it prepared (DDP-wrapped when distributed).
        train_loader
            Any DataLoader; a shuffling one is given a seeded, resumable order.
        loss_fn
            ``(model, batch) -> (loss, logs)``; ``logs`` are extra scalars to record.
        eval_fn
            ``(unwrapped model) -> metrics``, run in eval mode under ``no_grad`` on every rank
            every ``eval_every`` steps (or per epoch), at the end, and with ``eval_at_start``
            also on the starting weights (so fine-tuning can never select worse than its start).
        param_groups
            Optimizer groups (e.g. :func:`discriminative_param_groups`); default: every
            trainable parameter at ``lr``, no weight decay on biases and norms.
        freeze
            A :class:`FreezeSchedule` applied as steps advance.
        after_step
            Called with the unwrapped model after each optimizer step (parameter clamps, EMA).
        on_device
            ``batch -> batch``, run on each batch once it is on the training device and before
            ``loss_fn`` (batched augmentation: it runs on the GPU when there is one). It must
            draw from its own seeded generator, not the global RNG, for exact resume.
        """
        cfg, acc = self.config, self.accelerator
        started = time.perf_counter()
        if acc.is_main_process:
            cfg.output_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, cfg.output_dir / "engine.yaml")
        groups = param_groups or default_param_groups(model, cfg.lr, cfg.weight_decay)
        optimizer = torch.optim.AdamW(
            groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
        )
        model, optimizer, loader = acc.prepare(model, optimizer, train_loader)
        inner = acc.unwrap_model(model)  # once: unwrapping costs milliseconds per call
        if len(loader) == 0:
            raise ValueError(
                "the training loader yields no batches (dataset smaller than one batch?)"
            )
        total = self.total_steps(len(loader))
        schedule = WarmupDecay(cfg.schedule, cfg.warmup_steps, total, cfg.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer.optimizer, schedule)
        ckpt = CheckpointManager(
            cfg.output_dir / "checkpoints",
            cfg.keep_last,
            acc.is_main_process,
            acc.process_index,
            acc.wait_for_everyone,
        )
        prog, rng = TrainProgress(), None
        ckpt.clear_temporary()
        if cfg.resume == "never":
            ckpt.clear()  # a fresh run must not be mixed up with an older one's checkpoints
        elif cfg.resume == "auto":
            prog, rng = resume_newest_intact(ckpt, acc, model, optimizer, scheduler, len(loader))
        else:
            resume_from = Path(cfg.resume)
            if (problem := checkpoint_problem(resume_from)) is not None:
                raise CheckpointError(f"train.resume: {problem}")
            prog, rng = resume_training_state(
                resume_from, acc, model, optimizer, scheduler, len(loader)
            )
        resumed_from = prog.step
        run_log = RunLogger(
            cfg.output_dir, acc.is_main_process, cfg.tensorboard, resume_step=prog.step
        )
        distributed = acc.num_processes > 1
        if freeze is not None:
            freeze.thawed = None
            freeze.update(prog.step, toggle_requires_grad=not distributed)
            trainable = freeze.trainable_parameters()
        else:
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        logger.info(
            "training to step %d from step %d: %s trainable parameters, %d processes, batch %d",
            total,
            prog.step,
            f"{trainable:,}",
            acc.num_processes,
            (train_loader.batch_size or 0) * acc.num_processes * cfg.grad_accum,
        )
        result = TrainResult(
            step=prog.step,
            epoch=prog.epoch,
            final_loss=math.nan,
            resumed_from=resumed_from,
            trainable_parameters=trainable,
        )
        if prog.step > 0 and prog.batch_in_epoch == 0 and rng is not None:
            restore_rng(rng)
            rng = None
        from tqdm.auto import tqdm

        bar = tqdm(
            total=total,
            initial=prog.step,
            disable=not (cfg.progress and acc.is_main_process),
            desc="train",
            dynamic_ncols=True,
        )
        window: list[float] = []
        extras: dict[str, list[Any]] = {}  # tensors stay on the device until logged
        micro: list[torch.Tensor] = []  # the step's micro-batch losses, on the device
        step_losses: list[float] = []
        grad_norm: float | None = None
        step_lr = math.nan
        # What the newest checkpoint holds: a finished run that is re-run saves nothing again.
        saved = dict(vars(prog)) if resumed_from else None
        last_eval, stop = prog.eval_step, prog.stopped_early
        if eval_fn is not None and cfg.eval_at_start and prog.step == 0:
            stop = self._evaluate(model, eval_fn, prog, ckpt, run_log, result)
            last_eval = 0
        model.train()
        samples_per_step = (train_loader.batch_size or 0) * acc.num_processes * cfg.grad_accum
        clock = time.perf_counter()  # start of the logging window, evaluation time left out
        while prog.step < total and not stop:
            loader.set_epoch(prog.epoch)
            epoch_loader = (
                acc.skip_first_batches(loader, prog.batch_in_epoch)
                if prog.batch_in_epoch
                else loader
            )
            finished_epoch = True
            for batch in epoch_loader:
                if rng is not None:
                    restore_rng(rng)
                    rng = None
                if on_device is not None:
                    batch = on_device(batch)
                if freeze is not None and freeze.update(
                    prog.step, toggle_requires_grad=not distributed
                ):
                    result.trainable_parameters = freeze.trainable_parameters()
                with acc.accumulate(model):
                    loss, logs = loss_fn(model, batch)
                    micro.append(acc.reduce(loss.detach().float(), reduction="mean"))
                    acc.backward(loss)
                    if acc.sync_gradients:
                        if freeze is not None:
                            freeze.mask_gradients()
                        norm = None
                        if cfg.max_grad_norm > 0:
                            norm = acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                        step_losses, grad_norm = self._checked(micro, norm, prog)
                        step_lr = optimizer.param_groups[0]["lr"]
                        optimizer.step()
                        if not optimizer.step_was_skipped:
                            scheduler.step()
                            if after_step is not None:
                                after_step(inner)
                    optimizer.zero_grad(set_to_none=True)
                prog.batch_in_epoch += 1
                for key, val in (logs or {}).items():
                    extras.setdefault(key, []).append(
                        val.detach() if isinstance(val, torch.Tensor) else val
                    )
                if not acc.sync_gradients:
                    continue
                prog.step += 1
                step_loss = sum(step_losses) / len(step_losses)
                micro.clear()
                result.losses.append((prog.step, step_loss))
                window.append(step_loss)
                bar.update(1)
                if prog.step % cfg.log_every == 0 or prog.step == total:
                    now = time.perf_counter()
                    rate = len(window) * samples_per_step / max(now - clock, 1e-9)
                    self._log_train(run_log, bar, prog, window, extras, step_lr, grad_norm, rate)
                    clock = now
                if eval_fn is not None and cfg.eval_every and prog.step % cfg.eval_every == 0:
                    began = time.perf_counter()
                    stop = self._evaluate(model, eval_fn, prog, ckpt, run_log, result)
                    last_eval = prog.step
                    clock += time.perf_counter() - began
                if cfg.checkpoint_every and prog.step % cfg.checkpoint_every == 0:
                    result.last_checkpoint = self._save(ckpt, model, optimizer, scheduler, prog)
                    saved = dict(vars(prog))
                if prog.step >= total or stop:
                    finished_epoch = prog.batch_in_epoch >= len(loader)
                    break
            if finished_epoch:
                prog.epoch += 1
                prog.batch_in_epoch = 0
                if eval_fn is not None and not cfg.eval_every and not stop:
                    began = time.perf_counter()
                    stop = self._evaluate(model, eval_fn, prog, ckpt, run_log, result)
                    last_eval = prog.step
                    clock += time.perf_counter() - began
        bar.close()
        if eval_fn is not None and last_eval != prog.step and not stop:
            stop = self._evaluate(model, eval_fn, prog, ckpt, run_log, result)
        if saved != vars(prog):  # a new step, or an evaluation after the last save
            result.last_checkpoint = self._save(ckpt, model, optimizer, scheduler, prog)
        run_log.close()
        result.step, result.epoch = prog.step, prog.epoch
        result.final_loss = result.losses[-1][1] if result.losses else math.nan
        result.best_value, result.best_step = prog.best_value, prog.best_step
        best = ckpt.root / "best"
        result.best_checkpoint = best if prog.best_step is not None and best.is_dir() else None
        result.stopped_early = stop
        result.wall_time_s = time.perf_counter() - started
        acc.wait_for_everyone()
        return result

    def _checked(
        self, micro: list[torch.Tensor], norm: torch.Tensor | None, prog: TrainProgress
    ) -> tuple[list[float], float | None]:
        """The step's micro-batch losses and gradient norm on the host, checked finite.

        The step's one host sync, made before ``optimizer.step`` so a non-finite loss or
        gradient never reaches the weights (fp16: the grad scaler skips such steps itself).
        """
        values = torch.stack([*micro, *([norm.float()] if norm is not None else [])]).tolist()
        losses, grad_norm = values[: len(micro)], values[-1] if norm is not None else None
        for value in losses:
            if not math.isfinite(value):
                raise NonFiniteLossError(
                    prog.step + 1, "loss", value, prog.epoch, prog.batch_in_epoch
                )
        finite = grad_norm is None or math.isfinite(grad_norm)
        if not finite and self.config.mixed_precision != "fp16":
            raise NonFiniteLossError(
                prog.step + 1, "gradient norm", grad_norm, prog.epoch, prog.batch_in_epoch
            )
        return losses, grad_norm

    def _log_train(
        self,
        run_log: RunLogger,
        bar: Any,
        prog: TrainProgress,
        window: list[float],
        extras: dict[str, list[Any]],
        lr: float,
        grad_norm: float | None,
        samples_per_s: float,
    ) -> None:
        """Log the window's mean loss, the LR of the last step (first group), extras and the
        window's training throughput (samples per second, all processes, no evaluation)."""
        row: dict[str, Any] = {"train/loss": sum(window) / len(window), "train/epoch": prog.epoch}
        row["train/lr"] = lr
        row["train/samples_per_s"] = samples_per_s
        if grad_norm is not None:
            row["train/grad_norm"] = grad_norm
        for key, values in extras.items():
            stacked = torch.stack([torch.as_tensor(v).float().to(self.device) for v in values])
            row[f"train/{key}"] = stacked.mean().item()  # one host sync per logged value
        run_log.log(prog.step, row)
        bar.set_postfix(loss=f"{row['train/loss']:.4f}", lr=f"{row['train/lr']:.2e}")
        window.clear()
        extras.clear()

    def _evaluate(
        self,
        model: nn.Module,
        eval_fn: EvalFn,
        prog: TrainProgress,
        ckpt: CheckpointManager,
        run_log: RunLogger,
        result: TrainResult,
    ) -> bool:
        """Run ``eval_fn``, update best checkpoint and patience; return whether to stop."""
        cfg, acc = self.config, self.accelerator
        inner = acc.unwrap_model(model)
        modes = [(m, m.training) for m in inner.modules()]
        inner.eval()
        with torch.no_grad():
            metrics = eval_fn(inner)
        for module, training in modes:
            module.training = training
        if acc.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            metrics = broadcast_object_list([metrics])[0]
        if not metrics:
            return False
        metrics = {k: float(v) for k, v in metrics.items()}
        prog.eval_step = prog.step
        result.evals.append({"step": float(prog.step), **metrics})
        run_log.log(prog.step, {f"eval/{k}": v for k, v in metrics.items()})
        if not cfg.best_metric:
            return False
        if cfg.best_metric not in metrics:
            raise KeyError(
                f"best_metric {cfg.best_metric!r} not among eval metrics {sorted(metrics)}"
            )
        value = metrics[cfg.best_metric]
        better = prog.best_value is None or (
            value > prog.best_value if cfg.best_mode == "max" else value < prog.best_value
        )
        if better:
            prog.best_value, prog.best_step, prog.evals_since_best = value, prog.step, 0
            ckpt.save("best", acc.unwrap_model(model), self._state(prog))
            logger.info("step %d: new best %s = %.4f", prog.step, cfg.best_metric, value)
            return False
        prog.evals_since_best += 1
        patience = cfg.early_stopping_patience
        if patience and prog.evals_since_best >= patience:
            logger.info(
                "early stop at step %d: %s has not improved for %d evaluations "
                "(best %.4f at step %d)",
                prog.step,
                cfg.best_metric,
                patience,
                prog.best_value,
                prog.best_step,
            )
            prog.stopped_early = True
            return True
        return False

    def _state(self, prog: TrainProgress) -> dict[str, Any]:
        return {**vars(prog), "num_processes": self.accelerator.num_processes, "time": time.time()}

    def _save(
        self,
        ckpt: CheckpointManager,
        model: nn.Module,
        optimizer: Any,
        scheduler: Any,
        prog: TrainProgress,
    ) -> Path:
        return save_training_state(
            ckpt, self.accelerator, model, optimizer, scheduler, self._state(prog)
        )
