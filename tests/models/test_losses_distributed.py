"""Distributed losses (2 gloo processes) equal the single-process loss on the whole batch.

Rank 0 holds 3 pairs and rank 1 holds 4 (unequal on purpose). The mean of the per-rank losses
must equal the single-process loss, the per-rank embedding gradients divided by the world size
(what DDP's averaging does to parameter gradients) must equal the single-process gradients of
those rows, and the mean of the per-rank logit-scale gradients must equal its gradient.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from medvl.models.losses import ContrastiveLoss, SemanticMatchingLoss, SigmoidLoss

WORLD = 2
SPLIT = (3, 4)
NAN = float("nan")


def global_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    n = sum(SPLIT)
    labels = torch.randint(-1, 2, (n, 5), generator=generator).float()
    labels[torch.rand(n, 5, generator=generator) < 0.3] = NAN
    return {
        "image": F.normalize(torch.randn(n, 6, generator=generator), dim=-1),
        "text": F.normalize(torch.randn(n, 6, generator=generator), dim=-1),
        "labels": labels,
    }


def compute(kind: str, image, text, scale, labels) -> torch.Tensor:
    if kind == "infonce":
        return ContrastiveLoss()(image, text, scale)
    if kind == "sigmoid":
        return SigmoidLoss()(image, text, scale, torch.tensor(-2.0))
    return SemanticMatchingLoss()(image, text, scale, labels, labels, paired=kind == "paired")


def _worker(rank: int, store: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        batch = global_batch()
        start = sum(SPLIT[:rank])
        rows = slice(start, start + SPLIT[rank])
        results = {}
        for kind in ("infonce", "sigmoid", "semantic", "paired"):
            image = batch["image"][rows].clone().requires_grad_(True)
            text = batch["text"][rows].clone().requires_grad_(True)
            scale = torch.tensor(4.0, requires_grad=True)
            loss = compute(kind, image, text, scale, batch["labels"][rows])
            loss.backward()
            results[kind] = {
                "loss": loss.detach(),
                "image_grad": image.grad,
                "text_grad": text.grad,
                "scale_grad": scale.grad,
            }
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("dist")
    mp.spawn(_worker, args=(str(out / "store"), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["infonce", "sigmoid", "semantic", "paired"])
def test_distributed_loss_and_gradients_equal_single_process(
    rank_results: list[dict], kind: str
) -> None:
    batch = global_batch()
    image = batch["image"].clone().requires_grad_(True)
    text = batch["text"].clone().requires_grad_(True)
    scale = torch.tensor(4.0, requires_grad=True)
    loss = compute(kind, image, text, scale, batch["labels"])
    loss.backward()

    per_rank = [r[kind] for r in rank_results]
    mean_loss = sum(r["loss"] for r in per_rank) / WORLD
    torch.testing.assert_close(mean_loss, loss.detach())
    image_grads = torch.cat([r["image_grad"] for r in per_rank]) / WORLD
    text_grads = torch.cat([r["text_grad"] for r in per_rank]) / WORLD
    torch.testing.assert_close(image_grads, image.grad)
    torch.testing.assert_close(text_grads, text.grad)
    mean_scale_grad = sum(r["scale_grad"] for r in per_rank) / WORLD
    torch.testing.assert_close(mean_scale_grad, scale.grad)
