"""attn-doctor: inspect and repair the attention backends of LLM training, and recommend one."""

__version__ = "0.1.0"
