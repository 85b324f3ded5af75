"""x2vlm_core: the X²-VLM model, objectives, training, checkpoints and CLI.

Paper: Zeng et al., "X²-VLM: All-In-One Pre-trained Model For Vision-Language Tasks", TPAMI 2023.
Builds plugins by name through `registry`; never imports `plugins`.
"""

__version__ = "0.1.0"
