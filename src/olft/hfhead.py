"""olft's pooling and head on a transformers `...ForSequenceClassification` class.

`OlftPooling` is mixed in before the family's class (`class OlftBertForSequenceClassification(
OlftPooling, BertForSequenceClassification)`): the base model runs as usual, its last hidden
state (final norm and projection included, as olft pools it) is pooled by `config.olft["pooling"]`
and scored by dropout + a Linear with a bias, as olft's head does:

- "mean": mean over the tokens whose attention_mask is 1 (the pooler, if any, is not used);
- "cls": position 0, through the base model's pooler when olft used it (`config.olft["pooler"]`);
- "last": the last token whose attention_mask is 1 (any padding side; pad may equal eos).

`config.olft` = {"pooling", "pooler" (path in the base model or null), "head" ("classifier" or
"score": the parent's head attribute, so peft's SEQ_CLS `modules_to_save` finds it), "size" (the
pooled width), "dropout" (the head's dropout probability)}. `olft export` writes this file next
to the model as `olft_head.py` (imports torch and transformers only; loaded with
trust_remote_code=True through config.json's `auto_map`); `olft.load` uses the same class in memory.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.loss.loss_utils import ForSequenceClassificationLoss
from transformers.modeling_outputs import SequenceClassifierOutput


class OlftPooling:
    """Pools and scores as olft's `Stack` does; mix in before a `...ForSequenceClassification`."""

    def __init__(self, config):
        super().__init__(config)
        spec = config.olft
        self.olft_dropout = nn.Dropout(spec["dropout"])
        setattr(self, spec["head"], nn.Linear(spec["size"], config.num_labels, bias=True))
        self.post_init()

    def olft_pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(batch, seq, hidden) last hidden state -> (batch, size) pooled as olft pooled it."""
        spec = self.config.olft
        if spec["pooling"] == "mean":
            weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
            return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
        if spec["pooling"] == "cls":
            return self.base_model.get_submodule(spec["pooler"])(hidden) if spec["pooler"] else hidden[:, 0]
        positions = torch.arange(attention_mask.shape[1], device=hidden.device)
        last = (positions * attention_mask.to(torch.long)).argmax(-1)  # rightmost real token
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    def forward(self, input_ids=None, attention_mask=None, labels=None, return_dict=None, **kwargs):
        """Logits (batch, num_labels); `loss` too when `labels` are given (by `config.problem_type`)."""
        if attention_mask is None:
            shape = input_ids.shape if input_ids is not None else kwargs["inputs_embeds"].shape[:2]
            attention_mask = torch.ones(shape, dtype=torch.long, device=self.device)
        out = self.base_model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **kwargs)
        pooled = self.olft_pool(out.last_hidden_state, attention_mask)
        logits = getattr(self, self.config.olft["head"])(self.olft_dropout(pooled))
        loss = None if labels is None else ForSequenceClassificationLoss(labels, logits, self.config)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)
