"""Generation machinery the ``hf`` generator drives: prompt encoding with chat templates, the decoding loop, its
KV buffers and the shared-prompt cache."""
