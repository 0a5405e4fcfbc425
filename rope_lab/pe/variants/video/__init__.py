"""Video-LLM variants on interleaved text/vision positions: M-RoPE, VideoRoPE, HoPE, VRoPE, TAD-RoPE and their
shared machinery (``multimodal``)."""
