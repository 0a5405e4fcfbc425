"""Long-context evaluation of any causal LM (a local pretrained checkpoint or a rope_lab decoder): perplexity by
token position, sliding-window perplexity, passkey retrieval and RULER-style synthetic tasks (``eval.py
pretrained=<dir>``)."""
