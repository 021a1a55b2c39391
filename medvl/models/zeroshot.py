"""Zero-shot findings from an aligned space: positive vs negative prompt sets (CheXzero style).

For each finding there is a set of positive prompts ("There is a pleural effusion.") and a set
of negative prompts ("No pleural effusion."). With ``s+`` and ``s-`` the mean cosine similarity
of an image to each set, the finding's probability is the first entry of
``softmax(scale * [s+, s-])`` = ``sigmoid(scale * (s+ - s-))``. SigLIP-family models (with
a learned logit bias) use their own sigmoid, ``sigmoid(scale * s+ + bias)``.

The mean similarity to a set equals the similarity to the mean of the set's (normalised)
prompt embeddings, so each set is embedded once into one vector ("prompt ensemble"); these
vectors are cached and recomputed only when the text side's weights change (checked by a
cheap fingerprint of the text tower and projection parameters: version counters plus a strided
sample, so optimiser steps, state-dict loads, LoRA merges and ``.data`` writes are noticed).

``scale`` is, in order of preference: the per-finding scale fitted by :meth:`calibrate` on a
labeled validation set, ``1 / temperature`` if one was given, or the model's learned
``logit_scale``. :meth:`calibrate` also picks a per-finding decision threshold (the one with
the best F1 on the validation set).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import Tensor

from medvl.models.aligner import MedVLAligner

logger = logging.getLogger(__name__)

UncertainPolicy = Literal["ignore", "positive", "negative"]


class FindingPrompts(NamedTuple):
    """The positive and negative prompt sets of one finding."""

    positive: tuple[str, ...]
    negative: tuple[str, ...]


@dataclass
class PromptBank:
    """Prompt sets per finding, in a fixed finding order."""

    prompts: dict[str, FindingPrompts]

    def __post_init__(self) -> None:
        if not self.prompts:
            raise ValueError("a prompt bank needs at least one finding")
        for name, sets in self.prompts.items():
            for kind, texts in (("positive", sets.positive), ("negative", sets.negative)):
                if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
                    raise ValueError(f"finding {name!r}: {kind} prompts must be non-empty strings")
            shared = set(sets.positive) & set(sets.negative)
            if shared:
                raise ValueError(f"finding {name!r}: prompt in both sets: {sorted(shared)[0]!r}")

    @property
    def findings(self) -> tuple[str, ...]:
        return tuple(self.prompts)

    def __getitem__(self, finding: str) -> FindingPrompts:
        return self.prompts[finding]

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, findings: Sequence[str]) -> PromptBank:
        """The bank restricted to ``findings`` (in that order)."""
        missing = [f for f in findings if f not in self.prompts]
        if missing:
            raise KeyError(f"no prompts for findings {missing}")
        return PromptBank({f: self.prompts[f] for f in findings})

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "prompts") -> PromptBank:
        """Build from ``{"findings": {name: {"positive": [...], "negative": [...]}}}``."""
        findings = data.get("findings") if isinstance(data, dict) else None
        if not isinstance(findings, dict):
            raise ValueError(f"{where}: top-level 'findings' mapping missing")
        prompts = {}
        for name, sets in findings.items():
            if not isinstance(sets, dict) or set(sets) != {"positive", "negative"}:
                raise ValueError(f"{where}: finding {name!r} needs exactly positive and negative")
            prompts[str(name)] = FindingPrompts(tuple(sets["positive"]), tuple(sets["negative"]))
        try:
            return cls(prompts)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None

    @classmethod
    def from_yaml(cls, path: str | Path | None = None) -> PromptBank:
        """Read a prompt file; ``None`` reads the packaged CheXpert-14 prompts."""
        if path is None:
            text = resources.files("medvl.resources").joinpath("prompts.yaml").read_text()
            where = "medvl/resources/prompts.yaml"
        else:
            path = Path(path)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: prompt file not found")
            text, where = path.read_text(), str(path)
        return cls.from_dict(yaml.safe_load(text), where=where)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "findings": {
                name: {"positive": list(s.positive), "negative": list(s.negative)}
                for name, s in self.prompts.items()
            },
        }


def prompt_texts(prompts: PromptBank) -> tuple[list[str], list[tuple[int, int]]]:
    """All prompts in one list, and the (start, end) span of each finding's two sets."""
    texts: list[str] = []
    spans = []
    for name in prompts.findings:
        for group in (prompts[name].positive, prompts[name].negative):
            spans.append((len(texts), len(texts) + len(group)))
            texts.extend(group)
    return texts, spans


@contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """Run a block in eval mode without gradients, then restore the module's mode."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def embed_images(aligner: MedVLAligner, pixels: Tensor, batch_size: int = 64) -> Tensor:
    """Image embeddings ``(N, D)`` (float32, on the model's device) in eval mode, batched."""
    device = model_device(aligner)
    out = []
    with eval_mode(aligner):
        for start in range(0, pixels.shape[0], batch_size):
            chunk = pixels[start : start + batch_size].to(device)
            out.append(aligner.encode_image(chunk).float())
    return torch.cat(out) if out else torch.empty(0, aligner.config.embed_dim, device=device)


def embed_texts(aligner: MedVLAligner, texts: Sequence[str], batch_size: int = 64) -> Tensor:
    """Text embeddings ``(N, D)`` (float32, on the model's device) in eval mode, batched."""
    device = model_device(aligner)
    out = []
    with eval_mode(aligner):
        for start in range(0, len(texts), batch_size):
            batch = aligner.tokenize(list(texts[start : start + batch_size]))
            out.append(aligner.encode_text(**{k: v.to(device) for k, v in batch.items()}).float())
    return torch.cat(out) if out else torch.empty(0, aligner.config.embed_dim, device=device)


def retrieval_scores(image_embeds: Tensor, text_embeds: Tensor) -> Tensor:
    """Cosine similarity ``(N_images, N_texts)``; rows rank reports for each image."""
    return F.normalize(image_embeds.float(), dim=-1) @ F.normalize(text_embeds.float(), dim=-1).T


def binary_targets(labels: Tensor, uncertain: UncertainPolicy = "ignore") -> Tensor:
    """Map 1/0/-1/NaN labels to 1/0/NaN: NaN (unknown) stays out of metrics and fitting."""
    labels = labels.float()
    out = torch.where((labels == 1) | (labels == 0), labels, torch.full_like(labels, math.nan))
    if uncertain != "ignore":
        out = torch.where(labels == -1, torch.full_like(out, float(uncertain == "positive")), out)
    return out


class ZeroShotClassifier:
    """Per-finding probabilities from positive/negative prompt ensembles.

    Parameters
    ----------
    aligner
        The aligned image/text model.
    prompts
        Prompt sets; their order is the order of output columns.
    temperature
        Fixed softmax temperature for every finding; ``None`` uses the model's logit scale.
    """

    def __init__(
        self, aligner: MedVLAligner, prompts: PromptBank, temperature: float | None = None
    ) -> None:
        if temperature is not None and temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.aligner = aligner
        self.prompts = prompts
        self.temperature = temperature
        n = len(prompts)
        self.scales: Tensor | None = None
        self.thresholds = torch.full((n,), 0.5)
        self._cache: Tensor | None = None
        self._cache_key: tuple[Any, ...] | None = None

    @property
    def findings(self) -> tuple[str, ...]:
        return self.prompts.findings

    def _fingerprint(self) -> tuple[Any, ...]:
        """What the prompt embeddings depend on, cheaply.

        Autograd version counters catch every in-place update made through the parameters
        (optimiser steps, ``load_state_dict``, peft merges); a sum over every 97th element of
        each parameter catches writes through ``.data`` that bypass the counters. Together
        they cost ~1% of one pass over the weights.
        """
        params = [
            *self.aligner.text_tower.parameters(),
            *self.aligner.text_projection.parameters(),
        ]
        with torch.no_grad():
            versions = tuple((p.data_ptr(), p._version) for p in params)
            samples = torch.stack([p.detach().reshape(-1)[::97].float().sum() for p in params])
        return (versions, tuple(samples.cpu().tolist()), model_device(self.aligner))

    def prompt_embeddings(self) -> Tensor:
        """``(F, 2, D)``: mean normalised embedding of the positive and negative set per finding."""
        key = self._fingerprint()
        if self._cache is not None and key == self._cache_key:
            return self._cache
        texts, spans = prompt_texts(self.prompts)
        embeds = embed_texts(self.aligner, texts)
        means = torch.stack([embeds[a:b].mean(dim=0) for a, b in spans])
        self._cache = means.view(len(self.findings), 2, -1)
        self._cache_key = key
        logger.debug("embedded %d prompts for %d findings", len(texts), len(self.findings))
        return self._cache

    def _image_embeds(self, x: Tensor) -> Tensor:
        if x.dim() == 4:
            return embed_images(self.aligner, x)
        if x.dim() == 2 and x.shape[1] == self.aligner.config.embed_dim:
            return F.normalize(x.float(), dim=-1).to(model_device(self.aligner))
        raise ValueError(
            f"expected pixels (B, 1, H, W) or image embeddings (B, {self.aligner.config.embed_dim})"
            f", got {tuple(x.shape)}"
        )

    def margins(self, x: Tensor) -> Tensor:
        """``s+ - s-`` per image and finding ``(B, F)`` (before any temperature)."""
        images = self._image_embeds(x)
        prompts = self.prompt_embeddings()
        sims = torch.einsum("bd,fkd->bfk", images, prompts)
        return sims[..., 0] - sims[..., 1]

    def finding_scales(self) -> Tensor:
        """The logit scale applied per finding ``(F,)``."""
        if self.scales is not None:
            return self.scales
        if self.temperature is not None:
            scale = 1.0 / self.temperature
        else:
            scale = float(self.aligner.logit_scale.detach())
        return torch.full((len(self.findings),), scale)

    def _siglip_bias(self) -> float | None:
        """The model's logit bias when its own sigmoid applies (SigLIP, not yet calibrated)."""
        bias = getattr(self.aligner, "logit_bias", None)
        if bias is None or self.scales is not None or self.temperature is not None:
            return None
        return float(bias.detach())

    def predict_proba(self, x: Tensor) -> Tensor:
        """Probabilities ``(B, F)`` from pixels ``(B, 1, H, W)`` or image embeddings ``(B, D)``.

        SigLIP-family models (a logit bias) score with their own sigmoid,
        ``sigmoid(scale * s+ + bias)``, until :meth:`calibrate` fits a per-finding scale.
        """
        bias = self._siglip_bias()
        if bias is not None:
            images = self._image_embeds(x)
            positive = torch.einsum("bd,fd->bf", images, self.prompt_embeddings()[:, 0])
            return torch.sigmoid(positive * float(self.aligner.logit_scale.detach()) + bias).cpu()
        margins = self.margins(x)
        return torch.sigmoid(margins * self.finding_scales().to(margins.device)).cpu()

    def predict(self, x: Tensor) -> Tensor:
        """Boolean decisions ``(B, F)`` at the per-finding thresholds."""
        return self.predict_proba(x) >= self.thresholds

    def calibrate(
        self, x: Tensor, labels: Tensor, uncertain: UncertainPolicy = "ignore"
    ) -> dict[str, dict[str, Any]]:
        """Fit a per-finding temperature (by likelihood) and threshold (best F1) on labeled data.

        ``labels`` is ``(N, F)`` with 1/0, -1 uncertain (handled by ``uncertain``) and NaN
        unknown (left out). Findings without both classes keep the default scale and a 0.5
        threshold. Returns what was fitted per finding.
        """
        from scipy.optimize import minimize_scalar
        from sklearn.metrics import precision_recall_curve

        margins = self.margins(x).cpu().double().numpy()
        targets = binary_targets(labels.cpu(), uncertain).double().numpy()
        if targets.shape != margins.shape:
            raise ValueError(f"labels {targets.shape} do not match predictions {margins.shape}")
        scales = self.finding_scales().double().numpy().copy()
        thresholds = np.full(len(self.findings), 0.5)
        report: dict[str, dict[str, Any]] = {}
        for j, name in enumerate(self.findings):
            keep = ~np.isnan(targets[:, j])
            d, y = margins[keep, j], targets[keep, j]
            if y.size == 0 or y.min() == y.max():
                report[name] = {"fitted": False, "reason": "needs both classes", "n": int(y.size)}
                continue

            def nll(log_scale: float, d: np.ndarray = d, y: np.ndarray = y) -> float:
                z = math.exp(log_scale) * d
                return float(np.mean(np.logaddexp(0.0, z) - y * z))

            fit = minimize_scalar(nll, bounds=(math.log(1e-2), math.log(1e4)), method="bounded")
            scales[j] = math.exp(fit.x)
            probs = 1.0 / (1.0 + np.exp(-scales[j] * d))
            precision, recall, cuts = precision_recall_curve(y, probs)
            f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
            best = int(np.argmax(f1))
            # halfway to the next lower score: same decisions here, robust to float rounding
            thresholds[j] = float(cuts[best] + cuts[best - 1]) / 2 if best else float(cuts[0]) / 2
            report[name] = {
                "fitted": True,
                "temperature": 1.0 / scales[j],
                "threshold": thresholds[j],
                "f1": float(f1[best]),
                "n": int(y.size),
                "n_positive": int(y.sum()),
            }
        self.scales = torch.tensor(scales, dtype=torch.float32)
        self.thresholds = torch.tensor(thresholds, dtype=torch.float32)
        return report

    def calibration_state(self) -> dict[str, Any]:
        """Scales and thresholds by finding, JSON-safe (for ``save_calibration``)."""
        scales = self.finding_scales()
        return {
            "findings": {
                name: {"scale": float(scales[j]), "threshold": float(self.thresholds[j])}
                for j, name in enumerate(self.findings)
            },
            "model_sha256": self.aligner.weights_sha256,
        }

    def save_calibration(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.calibration_state(), indent=2))
        return path

    def load_calibration(self, source: str | Path | dict[str, Any]) -> None:
        """Apply saved scales and thresholds (every finding of this bank must be present)."""
        state = source if isinstance(source, dict) else json.loads(Path(source).read_text())
        where = "calibration" if isinstance(source, dict) else str(source)
        per = state.get("findings", {})
        missing = [f for f in self.findings if f not in per]
        if missing:
            raise ValueError(f"{where}: no calibration for findings {missing}")
        recorded = state.get("model_sha256")
        if recorded and self.aligner.weights_sha256 and recorded != self.aligner.weights_sha256:
            logger.warning("%s was fitted on a different model (sha256 %s)", where, recorded[:12])
        self.scales = torch.tensor([float(per[f]["scale"]) for f in self.findings])
        self.thresholds = torch.tensor([float(per[f]["threshold"]) for f in self.findings])
