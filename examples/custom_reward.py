"""A custom reward written in Python, used two ways.

1. From the command line, through the built-in ``python`` reward::

       iterframe run --model PATH --dataset examples/data/reverse.jsonl --reward python \\
           --set reward.function=examples/custom_reward.py:reversal_reward --filter top-fraction \\
           --output-dir runs/reverse

2. From Python, passing the plain function straight to the loop (what ``main()`` below does)::

       python examples/custom_reward.py --model PATH --output-dir runs/reverse

A reward function takes three equal-length lists (prompts, completions, references) and returns one float per
completion; higher is better.
"""

from __future__ import annotations

import argparse
import os

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "reverse.jsonl")


def reversal_reward(prompts: list, completions: list[str], references: list[str]) -> list[float]:
    """Share of the reversed word the completion gets right, from its first character on (1.0: all of it).

    Partial credit makes the reward graded, so a filter such as ``top-fraction`` has something to rank even
    while exact answers are rare.
    """
    scores = []
    for completion, reference in zip(completions, references):
        answer = completion.strip()
        matched = 0
        for expected, given in zip(reference, answer):
            if expected != given:
                break
            matched += 1
        scores.append(matched / len(reference) if reference else 0.0)
    return scores


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the loop from Python with ``reversal_reward`` as the reward; return the metrics rows."""
    from iterframe import IterativeSFTConfig, IterativeSFTTrainer
    from iterframe.loop import IterativeLoop, LoopConfig
    from iterframe.loop.datasets import DatasetSettings, load_prompt_sets
    from iterframe.plugins import create_component

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="Model folder or Hub id.")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--prompts-per-iteration", type=int, default=8)
    parser.add_argument("--samples-per-prompt", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=6)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    prompts, eval_prompts = load_prompt_sets(DatasetSettings(path=DATA, eval_fraction=0.25))
    trainer = IterativeSFTTrainer(
        args.model, args=IterativeSFTConfig(output_dir=args.output_dir, learning_rate=1e-4, report_to="none")
    )
    loop = IterativeLoop(
        trainer,
        prompts,
        generator=create_component("generator", "hf", {"max_new_tokens": args.max_new_tokens}),
        reward=reversal_reward,  # a plain function is accepted and wrapped as a reward
        filters=[create_component("filter", "top-fraction", {"fraction": 0.5})],
        tokenizer=create_component("tokenizer", "completion-only"),
        loggers=[] if args.quiet else [create_component("logger", "console")],
        eval_prompts=eval_prompts,
        config=LoopConfig(
            output_dir=args.output_dir,
            iterations=args.iterations,
            prompts_per_iteration=args.prompts_per_iteration,
            samples_per_prompt=args.samples_per_prompt,
            quiet=args.quiet,
        ),
    )
    return loop.run()


if __name__ == "__main__":
    main()
