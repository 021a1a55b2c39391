"""medvl.models: towers, the aligner, its losses and zero-shot classification.

Entry points::

    from medvl.models import create_aligner, ContrastiveLoss, PromptBank, ZeroShotClassifier

    model = create_aligner("tiny-minilm")              # or a preset, config, or saved dir
    out = model(pixels, **model.tokenize(texts))        # image_embeds, text_embeds, logit_scale
    loss = ContrastiveLoss()(out["image_embeds"], out["text_embeds"], out["logit_scale"])
    model.save_pretrained("runs/x/model")
    probs = ZeroShotClassifier(model, PromptBank.from_yaml()).predict_proba(pixels)

``lora`` and ``sam`` are imported from their own modules (they pull in peft/segment-anything).
"""

from medvl.models.aligner import (
    PRESETS,
    AlignerConfig,
    MedVLAligner,
    create_aligner,
    read_saved_config,
)
from medvl.models.hub import ChecksumError
from medvl.models.losses import (
    ContrastiveLoss,
    SemanticMatchingLoss,
    gather_with_grad,
    label_similarity,
    label_vectors,
)
from medvl.models.towers import (
    ImageTower,
    ImageTowerConfig,
    TextTower,
    TextTowerConfig,
    build_image_tower,
    build_text_tower,
)
from medvl.models.zeroshot import (
    FindingPrompts,
    PromptBank,
    ZeroShotClassifier,
    embed_images,
    embed_texts,
    retrieval_scores,
)

__all__ = [
    "PRESETS",
    "AlignerConfig",
    "ChecksumError",
    "ContrastiveLoss",
    "FindingPrompts",
    "ImageTower",
    "ImageTowerConfig",
    "MedVLAligner",
    "PromptBank",
    "SemanticMatchingLoss",
    "TextTower",
    "TextTowerConfig",
    "ZeroShotClassifier",
    "build_image_tower",
    "build_text_tower",
    "create_aligner",
    "embed_images",
    "embed_texts",
    "gather_with_grad",
    "label_similarity",
    "label_vectors",
    "read_saved_config",
    "retrieval_scores",
]
