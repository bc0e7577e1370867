import os
import subprocess
import sys

from transformers import AutoModelForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_example_runs_on_a_local_model(tmp_path, tiny_llama_path):
    output_dir = tmp_path / "quickstart"
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "examples", "quickstart.py"),
            "--model",
            tiny_llama_path,
            "--output-dir",
            str(output_dir),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("completion-only step")]
    trained, completion_length = line.split("tokens=")[1].split(" of ")
    assert int(trained) == int(completion_length)  # only the completion carries loss
    assert (output_dir / "README.md").exists()
    AutoModelForCausalLM.from_pretrained(output_dir)
