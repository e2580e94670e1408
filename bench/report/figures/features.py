"""Fig. 8: the primary head's last-layer feature maps before and after adaptation, their difference,
and the mask (``adapt.meta_test_iterates``: the first and the last heads of Alg. 3)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.report.figures.common import (
    MetaTestView,
    Models,
    Skip,
    StudyData,
    new_figure,
    off,
    pick_ours,
    row_run,
    save,
    title,
    to_hwc,
    trajectory_image,
)
from bench.report.runs import StudyRuns

NAME, TITLE = "fig8_features", "Fig. 8: feature maps before and after adaptation"


@dataclass
class Data(MetaTestView):
    channels: np.ndarray | None = None  # the shown channels, those that change most
    before: np.ndarray | None = None  # (len(channels), H, W)
    after: np.ndarray | None = None
    mask: np.ndarray | None = None  # (H, W) in [0, 1]
    mask_used: bool = True  # False: shown, but the loss was L_rec


def compute(study: StudyRuns, data: StudyData, models: Models, channels: int = 4) -> Data:
    import torch

    from bench.adaptation.inner import forward_with, meta_test_iterates

    ours = pick_ours(study.rows)
    mt = study.row_preset(ours.name).metatest
    t = models.model(ours.name)
    model, restorer = t.model, t.model.restorer
    head = getattr(restorer, "primary_head", None)
    if head is None or not hasattr(head, "blocks"):
        raise Skip(f"row {ours.name!r} has no primary head with a last feature layer")
    seed = row_run(study, ours.name).seed
    image = trajectory_image(study, ours, seed)
    noisy, _ = data.tensors("test", image)
    iterates, features, mask = meta_test_iterates(model, noisy, steps=mt.steps, lr=mt.lr, scope=t.recipe.inner_scope,
                                                  aux=t.recipe.aux_loss, optimizer=mt.optimizer)
    captured: list = []
    hook = head.blocks.register_forward_hook(lambda mod, inp, out: captured.append(out.detach()))
    try:
        with torch.no_grad():
            for p in (iterates[0], iterates[-1]):
                forward_with(restorer, p, noisy, features)
    finally:
        hook.remove()
    before, after = captured[0][0].cpu().numpy(), captured[1][0].cpu().numpy()  # (C, H, W)
    order = np.argsort(-np.abs(after - before).mean(axis=(1, 2)))[:channels]
    with torch.no_grad():
        m = mask if mask is not None else (model.mask_net(noisy) if hasattr(model, "mask_net") else None)
    caption = (f"The {before.shape[0]}-channel output of the primary head's last ResBlocks (the input of its "
               f"final conv) on test image {image}, before and after the K={mt.steps} meta-test steps, for the "
               f"{len(order)} channels that change most; their difference; and the mask.")
    return Data(caption, [], ours.name, seed, image, len(iterates) - 1, mt.lr, mt.optimizer, to_hwc(noisy), order,
                before[order], after[order], None if m is None else m[0, 0].cpu().numpy(), t.recipe.aux_loss == "mrl")


def draw(data: Data, folder: Path) -> list[Path]:
    before, after, order = data.before, data.after, data.channels
    diff = after - before
    fig = new_figure(1.7 * (len(order) + 1) + 0.8, 5.4)
    axes = fig.subplots(3, len(order) + 1, squeeze=False)
    vmin, vmax = float(min(before.min(), after.min())), float(max(before.max(), after.max()))
    lim = max(float(np.abs(diff).max()), 1e-8)
    ims = {}
    for j, c in enumerate(order):
        for i, (arr, kind) in enumerate(((before, "before"), (after, "after"), (diff, "diff"))):
            ax = axes[i, j]
            if kind == "diff":
                ims[kind] = ax.imshow(arr[j], cmap="RdBu_r", vmin=-lim, vmax=lim)
            else:
                ims[kind] = ax.imshow(arr[j], cmap="viridis", vmin=vmin, vmax=vmax)
            ax.set_title(f"ch {c}: {kind if kind != 'diff' else 'after − before'}")
            off(ax)
    fig.colorbar(ims["before"], ax=axes[:2, :len(order)].ravel().tolist(), shrink=0.8, label="activation")
    fig.colorbar(ims["diff"], ax=axes[2, :len(order)].ravel().tolist(), shrink=0.8, label="Δ activation")
    axm = axes[0, -1]
    if data.mask is not None:
        imm = axm.imshow(data.mask, cmap="magma", vmin=0, vmax=1)
        axm.set_title("mask M" + ("" if data.mask_used else "\n(not used: L_rec)"))
        fig.colorbar(imm, ax=axm, shrink=0.8, label="mask")
        off(axm)
    else:
        off(axm, "no mask network")
    axes[1, -1].imshow(data.noisy)
    axes[1, -1].set_title("noisy input")
    off(axes[1, -1])
    off(axes[2, -1], f"{data.steps} steps\nlr {data.lr:g}")
    title(fig, f"Fig. 8 — primary head's last feature maps before / after meta-test ({data.image})")
    return save(fig, folder, NAME)
