"""A one-output score head on any causal LM's backbone: the reward model, PPO's value model.

transformers ships a sequence-classification class for most causal LMs, not for all (LFM2, Granite,
Cohere2, Ernie 4.5, Apertus, ... in transformers 5). For those, alignflow builds the class
transformers itself builds for Llama, Qwen2 and the rest (`GenericForSequenceClassification`: the
architecture's own backbone, a linear `score`, read at the last non-pad token) on the
architecture's own pretrained-model base, so the causal LM's weights load into it by name and a
saved reward model loads back the same way. LLaMA-Factory's value-head models serve the same need.
"""

from __future__ import annotations

import sys
from functools import cache


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
    from transformers.modeling_layers import GenericForSequenceClassification
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_MAPPING

    if config_class not in MODEL_FOR_CAUSAL_LM_MAPPING or config_class not in MODEL_MAPPING:
        raise ValueError(f"{config_class.__name__}: transformers has no causal-LM backbone for this architecture, "
                         "so alignflow cannot put a score head on it")
    causal_lm = MODEL_FOR_CAUSAL_LM_MAPPING[config_class]
    base = next(c for c in causal_lm.__mro__[1:] if issubclass(c, PreTrainedModel) and c is not PreTrainedModel)
    name = causal_lm.__name__.replace("ForCausalLM", "") + "ForSequenceClassification"
    head = type(name, (GenericForSequenceClassification, base),
                {"base_model_prefix": base.base_model_prefix, "__module__": __name__,
                 "__doc__": f"{base.__name__} with a linear score head (alignflow.models.score_head)."})
    setattr(sys.modules[__name__], name, head)
    return head
