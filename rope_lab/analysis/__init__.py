"""Analysis tools: read logs, checkpoints and models; write tables and plots. Never trains."""
