"""2-D image variants: axial and mixed RoPE (RoPE-ViT) and their compositions with an absolute PE."""
