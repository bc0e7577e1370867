"""``python -m iterframe_reward_model serve --path MODEL``: serve a reward model over HTTP."""

from iterframe_reward_model.serve import main

if __name__ == "__main__":
    main()
