"""Evaluation: retrieval, grounding, eval sets and the runner that reports them."""
