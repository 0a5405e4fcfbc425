"""The positional-encoding variants, one folder per family (a family's shared module sits with it).

``absolute`` (nope, ape) and ``musecontrol`` (MuseControlLite's rotary cross-attention) stand alone; ``text``: 1-D
rotary variants on token indices; ``vision``: 2-D image variants; ``video``: the video-LLM variants on interleaved
text/vision positions (``multimodal``); ``long_context``: training-free extension of a trained RoPE model
(``extension``); ``bias``: the attention-logit bias baselines (``logit_bias``); ``agents``: trajectory variants on
(x, y, heading); ``attention``: variants that own the attention (PaTH, A²ATS). The registry imports every module here.
"""
