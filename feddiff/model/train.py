"""Former home of training, kept as a re-export so callers outside the model package keep
working until they import from the split modules:

* ``feddiff.model.optim``: make_optimizer, load_optimizer_state, set_lr, cosine_lr, batches,
  epoch_plan, epoch_rng;
* ``feddiff.model.pretrain``: set_seed, pretrain_denoiser;
* ``feddiff.model.centralised``: train_classifier, train_stage2, predict, train_centralised,
  History, TrainResult.
"""

from feddiff.model.centralised import History, TrainResult, predict, train_centralised, train_classifier, train_stage2
from feddiff.model.optim import batches, cosine_lr, epoch_plan, epoch_rng, load_optimizer_state, make_optimizer, set_lr
from feddiff.model.pretrain import pretrain_denoiser, set_seed

__all__ = [
    "History", "TrainResult", "batches", "cosine_lr", "epoch_plan", "epoch_rng", "load_optimizer_state",
    "make_optimizer", "predict", "pretrain_denoiser", "set_lr", "set_seed", "train_centralised",
    "train_classifier", "train_stage2",
]
