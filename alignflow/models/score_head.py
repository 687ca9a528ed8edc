"""A one-output score head on any causal LM's backbone: the reward model, PPO's value model.

transformers ships a sequence-classification class for most causal LMs, not for all (LFM2, Granite,
Cohere2, Ernie 4.5, Apertus, ... in transformers 5). For those, alignflow builds the class
transformers itself builds for Llama, Qwen2 and the rest (`GenericForSequenceClassification`: the
architecture's own backbone, a linear `score`, read at the last non-pad token) on the
architecture's own pretrained-model base, so the causal LM's weights load into it by name and a
saved reward model loads back the same way. LLaMA-Factory's value-head models serve the same need.
Its forward is transformers' generic one, except that it keeps only what every backbone returns
(the last hidden state; a cache or attentions where there are any): a pure state-space backbone
(Mamba) returns no attentions, and transformers' own forward reads them.
"""

from __future__ import annotations

import sys
from functools import cache

from transformers.modeling_layers import GenericForSequenceClassification


def has_native_score_head(config) -> bool:
    """Whether AutoModelForSequenceClassification knows this configuration's architecture."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    return type(config) in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING


def sequence_classifier_class(config) -> type:
    """The class to load a reward or value model of `config`'s architecture with: transformers'
    own when it has one (through AutoModelForSequenceClassification), else `score_head_class`."""
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification if has_native_score_head(config) else score_head_class(type(config))


@cache
def score_head_class(config_class: type) -> type:
    """`<Arch>ForSequenceClassification` for an architecture transformers gives none: the generic
    head on the base class of its causal LM (same weight names, same init, same attention setup).
    Registered in this module under its name, so that it pickles like a class defined here."""
    from transformers import PreTrainedModel
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_MAPPING

    if config_class not in MODEL_FOR_CAUSAL_LM_MAPPING or config_class not in MODEL_MAPPING:
        raise ValueError(f"{config_class.__name__}: transformers has no causal-LM backbone for this architecture, "
                         "so alignflow cannot put a score head on it")
    causal_lm = MODEL_FOR_CAUSAL_LM_MAPPING[config_class]
    base = next(c for c in causal_lm.__mro__[1:] if issubclass(c, PreTrainedModel) and c is not PreTrainedModel)
    name = causal_lm.__name__.replace("ForCausalLM", "") + "ForSequenceClassification"
    head = type(name, (_AnyBackboneScoreHead, base),
                {"base_model_prefix": base.base_model_prefix, "__module__": __name__,
                 "__doc__": f"{base.__name__} with a linear score head (alignflow.models.score_head)."})
    setattr(sys.modules[__name__], name, head)
    return head


class _AnyBackboneScoreHead(GenericForSequenceClassification):
    """GenericForSequenceClassification whose forward needs only the backbone's last hidden state."""

    @classmethod
    def is_custom_code(cls) -> bool:
        """Initialised as transformers' own classes are: every init this class runs is the
        backbone's `_init_weights`, transformers' code. As "custom code" (its module is not under
        transformers.) from_pretrained would skip modules without weights of their own, and
        Falcon-H1's model-level non-persistent `mup_vector` buffers stayed uninitialised memory
        (NaN scores)."""
        return cls.is_remote_code()

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, **kwargs):  # noqa: ANN001
        import torch
        from transformers.modeling_outputs import SequenceClassifierOutputWithPast

        outputs = getattr(self, self.base_model_prefix)(input_ids, attention_mask=attention_mask,
                                                        inputs_embeds=inputs_embeds, **kwargs)
        logits = self.score(outputs.last_hidden_state)
        pad_id = self.config.get_text_config().pad_token_id
        batch = logits.shape[0]
        if pad_id is None and batch != 1:
            raise ValueError("Cannot handle batch sizes > 1 if no padding token is defined.")
        if pad_id is None or input_ids is None:
            last = -1
        else:  # the rightmost non-pad token, for left and right padding alike (as transformers does)
            positions = torch.arange(input_ids.shape[-1], device=logits.device, dtype=torch.int32)
            last = (positions * (input_ids != pad_id).to(logits.device, torch.int32)).argmax(-1)
        pooled = logits[torch.arange(batch, device=logits.device), last]
        loss = None if labels is None else self.loss_function(logits=logits, labels=labels, pooled_logits=pooled,
                                                              config=self.config)
        return SequenceClassifierOutputWithPast(loss=loss, logits=pooled, cache=getattr(outputs, "cache", None),
                                                hidden_states=getattr(outputs, "hidden_states", None),
                                                attentions=getattr(outputs, "attentions", None))
