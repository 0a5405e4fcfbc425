"""Long-context language modelling (``task=lm_longctx``)."""
