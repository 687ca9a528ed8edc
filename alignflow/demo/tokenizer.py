"""Byte-level BPE tokenizer for the demo, with a training-compatible chat template."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

BOS = "<|endoftext|>"  # document separator in pretraining
PAD = "<|pad|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"  # end of turn = eos, so TRL's appended eos closes assistant turns
SPECIAL_TOKENS = [PAD, BOS, IM_START, IM_END]
CJK_CHARACTER = r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]"

# ChatML with {% generation %} around assistant content (TRL's assistant_only_loss needs it).
# trim_blocks eats a literal newline after a block tag, hence the explicit '\n' strings.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts`.

    Digits and CJK characters are split one by one before BPE, so merges never glue whole
    sentences of a small corpus into single tokens (which would stop held-out inputs from
    sharing pieces with training ones) and numbers stay digit by digit (helps arithmetic).
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CJK_CHARACTER), behavior="isolated"),
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=BOS, eos_token=IM_END, pad_token=PAD, unk_token=None
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped
