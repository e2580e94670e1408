"""The `official` entry adapts exactly what the official TTAID test loop adapts, and predicts the same.

The loop below is a literal transcription of the official meta-test (github.com/agusgun/TTAID,
modules/models/real_denoiser.py, RealDenoiserMetaTransfer.validate, lines 1041-1077 and 1170-1206):
deepcopy the restorer, Adam over all its parameters, then ``requires_grad = False`` on every
parameter in order up to and including the first whose name contains "head"; K iterations of full
forward, mask > 0.5, masked L1, zero_grad/backward/step, the prediction kept from the forward pass
before the last step (after K − 1 updates), clamped to [0, 1].
"""
from __future__ import annotations

import torch
from official_loop import official_loop

import methods
from bench.adaptation import registry as R
from bench.adaptation.run import adapt_image

K, LR = 4, 1e-3


def official(model, noisy: torch.Tensor, steps: int, lr: float):
    """(prediction, names of the parameters the official loop left trainable, the adapted restorer)."""
    out, adapted = official_loop(model.restorer, model.mask_net, noisy, steps, lr)
    return out, {n for n, p in adapted.named_parameters() if p.requires_grad}, adapted


def tiny():
    torch.manual_seed(3)
    model = methods.create("ours", base=8, scale=4, mask_base=8).double()
    with torch.no_grad():  # a mask that straddles 0.5, so the threshold selects some pixels, not all or none
        model.mask_net.out.weight.mul_(20)
    g = torch.Generator().manual_seed(4)
    noisy = torch.rand(1, 3, 20, 24, generator=g, dtype=torch.float64)
    return model, noisy


def test_the_official_entry_moves_what_the_official_loop_moves_and_predicts_the_same():
    model, noisy = tiny()
    with torch.no_grad():
        assert 0.05 < (model.mask_net(noisy) > 0.5).double().mean() < 0.95
    want, trainable, adapted = official(model, noisy, K, LR)
    got = adapt_image(R.get("official").with_(steps=K, lr=LR), model, noisy, diagnostics=False)
    assert set(got.moved) == trainable
    # the frozen ones did not change in the official loop either, and every trainable one did
    changed = {n for (n, a), (_, b) in zip(adapted.named_parameters(), model.restorer.named_parameters())
               if not torch.equal(a, b)}
    assert changed == trainable
    assert "primary_head.blocks.0.conv1.weight" not in trainable and not any(n.startswith("body.") for n in trainable)
    assert trainable == {n for n, _ in model.restorer.named_parameters() if n.startswith(("primary_head.", "aux_head."))
                         } - {"primary_head.blocks.0.conv1.weight"}
    assert got.updates == K - 1
    torch.testing.assert_close(got.prediction.clamp(0, 1), want, rtol=0, atol=1e-10)


def test_the_official_freeze_matters():
    """Adapting the primary head's first conv too (the heads' entry with the official settings)
    gives another prediction: the test above would catch a regression to it."""
    model, noisy = tiny()
    want, _, _ = official(model, noisy, K, LR)
    heads = R.get("alg3").with_(steps=K, lr=LR, optimizer="adam", mask_threshold=0.5, predict_after="before-last")
    other = adapt_image(heads, model, noisy, diagnostics=False).prediction.clamp(0, 1)
    assert (other - want).abs().max() > 1e-6


def test_the_official_entry_follows_a_body_and_head_recipe():
    """A model meta-trained with body + heads in the inner loop (Table 3's body + head rows) is
    adapted on every restorer weight, keeping the official loop's other settings."""
    entry = R.for_recipe(R.get("official"), methods.get("ours-body-head").recipe)
    assert entry.moves == "all" and entry.mask_threshold == 0.5 and entry.predict_after == "before-last"
