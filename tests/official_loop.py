"""The official TTAID test loop for one image, transcribed as its code runs it
(``bench.perf.reference.OFFICIAL_SOURCE`` names the file and lines), for the tests that compare the
``official`` entry and ``bench perf``'s official reference against it."""
import copy

import torch


def official_loop(restoration_net, mask_net, noisy, num_inner_loop, lr):
    """Returns (the reported output, the adapted copy of the restorer: its ``requires_grad`` flags
    are the loop's freezing, its weights what the loop moved)."""
    adapted_restoration_net = copy.deepcopy(restoration_net)
    adapted_restoration_net.train()
    optimizer = torch.optim.Adam(adapted_restoration_net.parameters(), lr=lr, betas=(0.9, 0.999))
    for name, param in adapted_restoration_net.named_parameters():
        param.requires_grad = False
        if 'head' in name:
            break
    for i in range(num_inner_loop):
        current_out_clean, current_noisy_rec = adapted_restoration_net(noisy)
        current_mask = mask_net(noisy)
        current_mask = (current_mask > 0.5).float()
        aux_loss = torch.mean(torch.abs(noisy - current_noisy_rec) * current_mask)
        optimizer.zero_grad()
        aux_loss.backward()
        optimizer.step()
        current_out_clean = torch.clamp(current_out_clean, 0.0, 1.0)
    return current_out_clean.detach(), adapted_restoration_net
