"""Multi-agent trajectory prediction on real aircraft tracks (``task=trajectory``)."""
