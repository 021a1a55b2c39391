"""Contrastive losses for image-report alignment, exact under data parallelism.

``ContrastiveLoss``
    Symmetric InfoNCE (CLIP/ConVIRT): each image must pick its own report among all reports in
    the batch and vice versa.
``SigmoidLoss``
    SigLIP's pairwise sigmoid with a learned bias (the SigLIP/MedSigLIP family's own loss).
``SemanticMatchingLoss``
    MedCLIP's idea: targets come from how similar the *finding labels* of an image and a report
    are, so two normal studies are not pushed apart as negatives, and images and reports that
    are not paired with each other (but are labeled) still teach the model.

Distributed training (the open_clip "local loss + gather with gradients" idea): each rank
gathers every rank's embeddings with a differentiable all-gather, then scores only its own
rows against the global batch. Negatives span the global batch, memory for the logits is
``local x global`` instead of ``global x global``, and each rank's loss is scaled so that the
mean over ranks -- what DDP's gradient averaging optimises -- equals the single-process loss
on the concatenated batch, value and gradient. Local batches may differ in size.

Both losses compute logits in float32 with autocast disabled: a bf16 softmax over a thousand
logits scaled by up to 100 loses the small differences that the loss is made of.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


def distributed_world(enabled: bool = True) -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` when not distributed."""
    if enabled and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def batch_sizes(n_local: int, device: torch.device) -> list[int]:
    """Local batch size of every rank (one tiny all-gather)."""
    world = dist.get_world_size()
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([n_local], dtype=torch.long, device=device))
    return [int(s.item()) for s in sizes]


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 (sizes may differ per rank); backward sums gradients over ranks.

    The gradient of rank r's input is the sum over all ranks of the gradient flowing into
    rank r's slice of their gathered copy (an all-reduce, then a slice), which is what makes
    the per-rank losses add up to the global loss. All-reduce works on every backend (gloo
    has no reduce-scatter), and the embeddings are small next to the towers' activations.
    """

    @staticmethod
    def forward(ctx, tensor: Tensor, counts: tuple[int, ...], rank: int) -> Tensor:  # type: ignore[override]
        longest = max(counts)
        padded = tensor.new_zeros((longest, *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor
        parts = [torch.empty_like(padded) for _ in counts]
        dist.all_gather(parts, padded)
        ctx.counts, ctx.rank = counts, rank
        return torch.cat([part[:n] for part, n in zip(parts, counts, strict=True)], dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.counts[: ctx.rank])
        return grad[start : start + ctx.counts[ctx.rank]], None, None


def gather_with_grad(tensor: Tensor, counts: list[int] | None = None) -> Tensor:
    """Concatenate ``tensor`` from every rank along dim 0, keeping gradients to each source.

    ``counts`` (every rank's row count, from :func:`batch_sizes`) saves a collective when the
    caller already knows them.
    """
    counts = counts or batch_sizes(tensor.shape[0], tensor.device)
    return _GatherWithGrad.apply(tensor, tuple(counts), dist.get_rank())


def _gather_no_grad(tensor: Tensor, counts: list[int]) -> Tensor:
    with torch.no_grad():
        return _GatherWithGrad.apply(tensor.detach(), tuple(counts), dist.get_rank())


def _all_sum(value: Tensor, world: int) -> Tensor:
    if world > 1:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def _soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-row cross-entropy against target distributions (rows of ``targets`` sum to 1)."""
    return -(targets * F.log_softmax(logits, dim=-1)).sum(dim=-1)


def check_matched_pairs(image_embeds: Tensor, text_embeds: Tensor, loss: str) -> None:
    """Refuse embeddings that are not matched ``(B, D)`` image/text pairs, naming the loss."""
    if image_embeds.shape != text_embeds.shape or image_embeds.dim() != 2:
        raise ValueError(
            f"{loss} needs matched (B, D) image and text embeddings, got "
            f"{tuple(image_embeds.shape)} and {tuple(text_embeds.shape)}"
        )


class ContrastiveLoss(nn.Module):
    """Symmetric InfoNCE over a (possibly distributed) batch of matched pairs.

    ``loss = (CE(s * I T^T, diag) + CE(s * T I^T, diag)) / 2`` with ``s`` the logit scale and
    ``I``, ``T`` L2-normalised image and text embeddings of matched pairs (row i with row i).

    Parameters
    ----------
    gather_distributed
        Under ``torch.distributed``, score local rows against the global batch (see the module
        docstring). Ignored in a single process.
    """

    def __init__(self, gather_distributed: bool = True) -> None:
        super().__init__()
        self.gather_distributed = gather_distributed

    def forward(self, image_embeds: Tensor, text_embeds: Tensor, logit_scale: Tensor) -> Tensor:
        check_matched_pairs(image_embeds, text_embeds, "InfoNCE")
        rank, world = distributed_world(self.gather_distributed)
        with torch.autocast(device_type=image_embeds.device.type, enabled=False):
            image, text = image_embeds.float(), text_embeds.float()
            scale = torch.as_tensor(logit_scale, device=image.device).float()
            n_local = image.shape[0]
            counts = batch_sizes(n_local, image.device) if world > 1 else [n_local]
            all_image = gather_with_grad(image, counts) if world > 1 else image
            all_text = gather_with_grad(text, counts) if world > 1 else text
            n_global, offset = sum(counts), sum(counts[:rank])
            targets = torch.arange(n_local, device=image.device) + offset
            image_loss = F.cross_entropy(scale * image @ all_text.T, targets, reduction="sum")
            text_loss = F.cross_entropy(scale * text @ all_image.T, targets, reduction="sum")
            return (image_loss + text_loss) / 2 * (world / n_global)


class SigmoidLoss(nn.Module):
    """SigLIP's pairwise sigmoid loss over a (possibly distributed) batch of matched pairs.

    ``loss = -1/N sum_ij log sigmoid(z_ij (s <I_i, T_j> + b))`` with ``z_ij`` = 1 on matched
    pairs and -1 elsewhere, ``s`` the logit scale, ``b`` the learned logit bias and ``N`` the
    global batch. Under ``torch.distributed`` each rank scores its own images against every
    rank's texts (gathered with gradients), scaled like :class:`ContrastiveLoss` so the mean
    over ranks equals the single-process loss.
    """

    def __init__(self, gather_distributed: bool = True) -> None:
        super().__init__()
        self.gather_distributed = gather_distributed

    def forward(
        self, image_embeds: Tensor, text_embeds: Tensor, logit_scale: Tensor, logit_bias: Tensor
    ) -> Tensor:
        check_matched_pairs(image_embeds, text_embeds, "the sigmoid loss")
        rank, world = distributed_world(self.gather_distributed)
        with torch.autocast(device_type=image_embeds.device.type, enabled=False):
            image, text = image_embeds.float(), text_embeds.float()
            scale = torch.as_tensor(logit_scale, device=image.device).float()
            bias = torch.as_tensor(logit_bias, device=image.device).float()
            n_local = image.shape[0]
            counts = batch_sizes(n_local, image.device) if world > 1 else [n_local]
            all_text = gather_with_grad(text, counts) if world > 1 else text
            n_global, offset = sum(counts), sum(counts[:rank])
            signs = -torch.ones(n_local, n_global, device=image.device)
            rows = torch.arange(n_local, device=image.device)
            signs[rows, rows + offset] = 1.0
            logits = scale * image @ all_text.T + bias
            return -F.logsigmoid(signs * logits).sum() * (world / n_global)


def label_vectors(
    labels: Tensor,
    positive: float = 1.0,
    uncertain: float = 0.5,
    negative: float = 0.0,
    unmentioned: float = 0.0,
) -> Tensor:
    """Map CheXpert label codes to non-negative finding vectors for label similarity.

    ``labels`` is ``(B, F)`` with 1 present, 0 negated, -1 uncertain and NaN not mentioned.
    Defaults: present 1; uncertain 0.5 (half a finding: "may represent effusion" is neither a
    positive nor a normal); negated and unmentioned 0 (reports mention a negated finding to
    say the study is normal for it, and an unmentioned finding is, by CheXpert convention,
    presumed absent). Non-negative values keep cosine similarities in [0, 1], so a target is a
    proportion of shared findings, never a "repulsion".
    """
    values = torch.full_like(labels, unmentioned, dtype=torch.float32)
    values = torch.where(labels == 1, torch.full_like(values, positive), values)
    values = torch.where(labels == 0, torch.full_like(values, negative), values)
    values = torch.where(labels == -1, torch.full_like(values, uncertain), values)
    known = torch.isnan(labels) | (labels == 1) | (labels == 0) | (labels == -1)
    if not bool(known.all()):
        bad = labels[~known][0].item()
        raise ValueError(f"label value {bad} is not a CheXpert code (1, 0, -1 or NaN)")
    if min(positive, uncertain, negative, unmentioned) < 0:
        raise ValueError("label vector values must be non-negative to keep similarities in [0, 1]")
    return values


def label_similarity(image_labels: Tensor, text_labels: Tensor, **mapping: float) -> Tensor:
    """Cosine similarity ``(Bi, Bt)`` of label vectors; an all-zero vector is similar to nothing."""
    a = F.normalize(label_vectors(image_labels, **mapping), dim=-1)
    b = F.normalize(label_vectors(text_labels, **mapping), dim=-1)
    return a @ b.T


class SemanticMatchingLoss(nn.Module):
    """MedCLIP-style soft-target contrastive loss from finding-label similarity.

    For image i and report j, ``S_ij`` is the cosine similarity of their label vectors
    (:func:`label_vectors`; MedCLIP used raw dot products of 1/0/-1 codes, which grow with the
    number of findings and let "both negative for 13 findings" outweigh a shared positive).
    Image i's target distribution over reports is its row of ``S`` divided by the row sum, and
    the loss is the cross-entropy of ``softmax(s * I T^T)`` against it, averaged with the
    same in the report-to-image direction.

    - Two studies with identical labels (e.g. two normals) share the target mass equally
      instead of repelling each other; when every label vector in the batch is the same the
      targets are uniform and the loss is ``mean_i(logsumexp_j z_ij - mean_j z_ij)``.
    - An item whose label vector shares nothing with any item of the other modality (or is
      all zero) has no target and is left out of that direction's mean; with ``paired=True``
      row i and column i are the same study, which is always its own positive (``S_ii = 1``).
    - Image and text batches may differ in size and need not be paired.

    Parameters
    ----------
    uncertain, unmentioned
        Values of uncertain (-1) and not-mentioned (NaN) labels in the label vectors.
    gather_distributed
        As for :class:`ContrastiveLoss`.
    """

    def __init__(
        self, uncertain: float = 0.5, unmentioned: float = 0.0, gather_distributed: bool = True
    ) -> None:
        super().__init__()
        self.uncertain = uncertain
        self.unmentioned = unmentioned
        self.gather_distributed = gather_distributed

    def forward(
        self,
        image_embeds: Tensor,
        text_embeds: Tensor,
        logit_scale: Tensor,
        image_labels: Tensor,
        text_labels: Tensor,
        paired: bool = False,
    ) -> Tensor:
        if (image_labels.shape[0], text_labels.shape[0]) != (
            image_embeds.shape[0],
            text_embeds.shape[0],
        ):
            raise ValueError("each embedding row needs one label row")
        if paired and image_embeds.shape[0] != text_embeds.shape[0]:
            raise ValueError("paired=True needs as many images as reports")
        rank, world = distributed_world(self.gather_distributed)
        mapping = {"uncertain": self.uncertain, "unmentioned": self.unmentioned}
        with torch.autocast(device_type=image_embeds.device.type, enabled=False):
            image, text = image_embeds.float(), text_embeds.float()
            scale = torch.as_tensor(logit_scale, device=image.device).float()
            image_labels = image_labels.to(image.device, torch.float32)
            text_labels = text_labels.to(image.device, torch.float32)
            if world > 1:
                image_counts = batch_sizes(image.shape[0], image.device)
                text_counts = batch_sizes(text.shape[0], image.device)
                all_image = gather_with_grad(image, image_counts)
                all_text = gather_with_grad(text, text_counts)
                all_image_labels = _gather_no_grad(image_labels, image_counts)
                all_text_labels = _gather_no_grad(text_labels, text_counts)
                offset = sum(image_counts[:rank])
            else:
                offset = 0
                all_image, all_text = image, text
                all_image_labels, all_text_labels = image_labels, text_labels
            image_sim = label_similarity(image_labels, all_text_labels, **mapping)
            text_sim = label_similarity(text_labels, all_image_labels, **mapping)
            if paired:
                rows = torch.arange(image.shape[0], device=image.device)
                image_sim[rows, rows + offset] = 1.0
                text_sim[rows, rows + offset] = 1.0
            image_sum, image_n = _directional(scale * image @ all_text.T, image_sim)
            text_sum, text_n = _directional(scale * text @ all_image.T, text_sim)
            counts = _all_sum(torch.stack([image_n, text_n]), world)
            image_term = image_sum / counts[0].clamp_min(1.0)
            text_term = text_sum / counts[1].clamp_min(1.0)
            return (image_term + text_term) / 2 * world


def _directional(logits: Tensor, similarity: Tensor) -> tuple[Tensor, Tensor]:
    """Summed soft cross-entropy over rows that have a target, and how many rows that is."""
    mass = similarity.sum(dim=-1, keepdim=True)
    valid = mass.squeeze(-1) > 0
    targets = similarity / mass.clamp_min(torch.finfo(similarity.dtype).tiny)
    per_row = _soft_cross_entropy(logits, targets)
    total = torch.where(valid, per_row, torch.zeros_like(per_row)).sum()
    return total, valid.sum().to(logits.dtype)
