"""Models: loading causal LMs and tokenizers, the tiny Llama, PEFT adapters, precision."""
