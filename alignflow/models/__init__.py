"""Loading models and tokenizers, and generating text from them."""
