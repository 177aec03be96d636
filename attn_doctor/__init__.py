"""attn-doctor: inspect, repair and install the attention backends of LLM training."""

__version__ = "0.1.0"
