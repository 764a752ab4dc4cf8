"""Functions over data and models: datasets from feedback, the reward model, PPO,
the gate and one training cycle. Never imports gradio or `app`; reads and writes the
database only through `storage`."""
