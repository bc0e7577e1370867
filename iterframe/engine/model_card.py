"""Hugging Face model cards (``README.md`` with YAML metadata) for models trained with iterframe."""

from __future__ import annotations

import os
from typing import Optional

import yaml

__all__ = ["write_model_card"]


def _framework_versions() -> dict[str, str]:
    import importlib.metadata as metadata

    versions = {}
    for package in ("iterframe", "transformers", "torch", "accelerate", "datasets", "tokenizers"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def write_model_card(
    output_dir: str,
    *,
    base_model: Optional[str],
    model_name: str,
    dataset_name: Optional[str],
    tags: list[str],
    global_step: int,
) -> str:
    """Write ``output_dir/README.md`` and return its path.

    ``base_model`` goes into the metadata only when it is a hub id; a local path is named in the text instead
    (the hub rejects paths in ``base_model``).
    """
    is_hub_id = bool(base_model) and not os.path.exists(base_model) and base_model.count("/") <= 1
    metadata = {"library_name": "transformers", "model_name": model_name, "tags": tags}
    if is_hub_id:
        metadata["base_model"] = base_model
    if dataset_name:
        metadata["datasets"] = [dataset_name]
    base_text = f"`{base_model}`" if base_model else "an unnamed model"
    dataset_text = f" on `{dataset_name}`" if dataset_name else ""
    versions = "\n".join(f"- {name}: {version}" for name, version in _framework_versions().items())
    body = f"""# {model_name}

This model is a fine-tuned version of {base_text}{dataset_text}, trained with
[iterframe](https://pypi.org/project/iterframe/) by iterative supervised fine-tuning: between optimisation
steps, completions were generated from the current model, scored, filtered, and the kept ones trained on.

- Base model: {base_text}
- Optimizer updates: {global_step}

## Quick start

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("{model_name}")
tokenizer = AutoTokenizer.from_pretrained("{model_name}")
```

## Framework versions

{versions}
"""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, "README.md")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("---\n" + yaml.safe_dump(metadata, sort_keys=False) + "---\n\n" + body)
    return path
