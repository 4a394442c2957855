"""The ``optim`` ingredient: :class:`mnerqg_graph.training.loop.TrainConfig`."""

from __future__ import annotations

from sacred import Ingredient

optim_ingredient = Ingredient("optim")


@optim_ingredient.config
def optim_config() -> None:
    """Defaults sized for the SynthTweets demo on a 2-core CPU."""
    epochs = 11
    batch_size = 16  # tweets per step (x number of types examples)
    lr = 2e-3
    encoder_lr = 2e-3
    weight_decay = 0.01
    warmup_ratio = 0.1
    grad_clip = 1.0
    device = "auto"  # cpu | cuda | auto
    amp = True  # bf16 autocast on CUDA
    select_metric = "f1"  # validation metric choosing the best epoch
    eval_batch_size = 64
    length_buckets = 0  # N > 0: batch tweets of similar length (pools of N batches), less padding
    progress = True  # steps, loss, ETA of epochs and evaluations on stderr (bar, or a line / 30 s)
