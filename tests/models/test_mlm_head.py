"""The MLM head: shares the text tower and scores only the masked tokens, as transformers does."""

from __future__ import annotations

import torch

from medvl.data.report_corpus import TokenizedReports
from medvl.models.mlm_head import build_mlm_model
from medvl.train.pretrain.mlm import mlm_collator

REPORTS = [
    "Heart size is normal. Lungs are clear. No pleural effusion or pneumothorax.",
    "Mild cardiomegaly. Small left pleural effusion with basilar atelectasis.",
    "Right upper lobe consolidation consistent with pneumonia.",
    "No acute cardiopulmonary abnormality. Stable calcified granuloma.",
    "Pulmonary vascular congestion and interstitial edema.",
    "Endotracheal tube terminates 4 cm above the carina. Lungs clear.",
    "Large right pneumothorax with mediastinal shift.",
    "Degenerative changes of the thoracic spine. No acute fracture.",
]


def test_mlm_head_shares_the_text_tower_and_scores_only_masked_tokens(tiny_aligner):
    text_model = tiny_aligner.text_tower.model
    mlm = build_mlm_model(text_model)
    assert mlm.encoder is text_model
    out_embed = mlm.mlm.get_output_embeddings().weight
    assert out_embed is text_model.get_input_embeddings().weight
    data = TokenizedReports(REPORTS[:8], tiny_aligner.tokenizer, 64)
    torch.manual_seed(0)
    batch = mlm_collator(tiny_aligner.tokenizer, 0.3)([data[i] for i in range(8)])
    mlm.eval()
    full = mlm.mlm(**batch).loss  # transformers' full-vocabulary forward
    sparse = mlm(batch["input_ids"], batch["attention_mask"], batch["labels"])
    torch.testing.assert_close(sparse, full, atol=1e-5, rtol=1e-5)
