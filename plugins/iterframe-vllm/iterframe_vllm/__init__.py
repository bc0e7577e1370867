"""iterframe-vllm: a vLLM generator for iterframe whose engine receives the trainer's weights in place."""

from .generator import VLLMGenerator
from .options import VLLMOptions

__version__ = "0.1.0"

__all__ = ["VLLMGenerator", "VLLMOptions"]
