"""Entry point of the ``iterframe`` group: registers the ``vllm`` generator."""

from iterframe import hookimpl

from .generator import VLLMGenerator


@hookimpl
def register_generators(register):
    register(VLLMGenerator)
