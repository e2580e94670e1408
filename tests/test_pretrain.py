"""MAXL pre-training: the recipe's grad_loss switch really removes L_G from the mask's meta step."""
import numpy as np
import torch

import methods
from bench.config import PretrainConfig
from bench.data import Source
from bench.data.base import ImagePair
from bench.data.noise import noise_model
from bench.train.context import TrainContext
from bench.train.pretrain import pretrain


def _mask_after_pretraining(grad_loss: bool):
    torch.manual_seed(0)
    model = methods.create("ours")
    img = np.random.default_rng(0).random((24, 24, 3), dtype=np.float32)
    source = Source([ImagePair("x", img)], [noise_model("synthetic-mix")])
    cfg = PretrainConfig(epochs=1, steps_per_epoch=1, batch=1, patch=16, lambda_g=1.0)
    ctx = TrainContext(device=torch.device("cpu"), rng=np.random.default_rng(0), quiet=True)
    pretrain(model, methods.get("ours").with_recipe(grad_loss=grad_loss).recipe, cfg, source, ctx)
    return model.mask_net.out.weight.detach().clone(), model.restorer.body.stem.weight.detach().clone()


def test_grad_loss_switch_changes_only_the_mask_step():
    mask_on, body_on = _mask_after_pretraining(True)
    mask_off, body_off = _mask_after_pretraining(False)
    assert not torch.equal(mask_on, mask_off)  # L_G entered the mask network's update
    assert torch.equal(body_on, body_off)  # the restorer's first (auxiliary) pass is the same
