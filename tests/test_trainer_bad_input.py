"""Bad step() input is rejected before anything changes, with an error naming the argument."""

import pytest
import torch

from iterframe import IterativeSFTConfig, IterativeSFTTrainer

CASES = [
    ("no inputs", {}, ValueError, "needs inputs"),
    ("empty texts", {"texts": []}, ValueError, "texts is empty"),
    ("empty input_ids", {"input_ids": []}, ValueError, "input_ids is empty"),
    ("string instead of list", {"texts": "hello"}, TypeError, "not a single string"),
    ("non-string text", {"texts": ["ok", 3]}, TypeError, r"texts\[1\] must be a string"),
    ("None text", {"texts": ["ok", None]}, TypeError, r"texts\[1\] must be a string"),
    ("texts_labels length", {"texts": ["a", "b"], "texts_labels": ["a"]}, ValueError, "texts has 2 samples but"),
    ("texts_labels alone", {"texts_labels": ["a"]}, ValueError, "texts_labels was given without texts"),
    ("mask without ids", {"attention_mask": [[1, 1]]}, ValueError, "without input_ids"),
    (
        "ids/mask count",
        {"input_ids": [[1, 2], [3]], "attention_mask": [[1, 1]]},
        ValueError,
        "attention_mask has 1",
    ),
    ("ids/labels count", {"input_ids": [[1, 2]], "labels": [[1, 2], [3]]}, ValueError, "labels has 2"),
    ("mask length in sample", {"input_ids": [[1, 2, 3]], "attention_mask": [[1, 1]]}, ValueError, "align token"),
    ("labels length in sample", {"input_ids": [[1, 2, 3]], "labels": [[1, 2]]}, ValueError, r"labels\[0\] has 2"),
    ("float ids", {"input_ids": [[1.5, 2.0]]}, TypeError, r"input_ids\[0\]\[0\] must be an int"),
    ("float tensor ids", {"input_ids": torch.ones(1, 3)}, TypeError, "must hold integers"),
    ("string ids", {"input_ids": ["hello"]}, TypeError, "pass texts="),
    ("negative id", {"input_ids": [[1, -5]]}, ValueError, "outside the model's vocabulary"),
    ("id beyond vocab", {"input_ids": [[1, 10_000_000]]}, ValueError, "outside the model's vocabulary"),
    ("label beyond vocab", {"input_ids": [[1, 2]], "labels": [[1, 999_999]]}, ValueError, r"labels\[0\] holds id"),
    ("mask not binary", {"input_ids": [[1, 2]], "attention_mask": [[1, 2]]}, ValueError, "only 0 and 1"),
    ("all-zero mask", {"input_ids": [[1, 2]], "attention_mask": [[0, 0]]}, ValueError, "no real tokens"),
    ("3-d tensor", {"input_ids": torch.ones(1, 2, 3, dtype=torch.long)}, ValueError, "2-D tensor"),
    ("single 1-d tensor", {"input_ids": torch.ones(3, dtype=torch.long)}, ValueError, "2-D tensor"),
    ("dict instead of list", {"input_ids": {"a": 1}}, TypeError, "list of token-id sequences"),
    ("bool ids", {"input_ids": [[True, False]]}, TypeError, "must be an int"),
]


@pytest.fixture(scope="module")
def trainer(tmp_path_factory, tiny_llama_path):
    args = IterativeSFTConfig(output_dir=str(tmp_path_factory.mktemp("bad") / "out"), report_to="none")
    return IterativeSFTTrainer(tiny_llama_path, args=args)


@pytest.mark.parametrize(("kwargs", "error", "message"), [case[1:] for case in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_rejected_and_changes_nothing(trainer, kwargs, error, message):
    before = {name: param.detach().clone() for name, param in trainer.model.named_parameters()}
    step_before = trainer.state.global_step
    optimizer_state_before = len(trainer.optimizer.state)
    with pytest.raises(error, match=message):
        trainer.step(**kwargs)
    assert trainer.state.global_step == step_before
    assert len(trainer.optimizer.state) == optimizer_state_before
    for name, param in trainer.model.named_parameters():
        assert torch.equal(before[name], param), name
    assert trainer.step(texts=["still works"])["global_step"] == step_before + 1
