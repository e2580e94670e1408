"""A trained model on a user's photos: loading it, cutting large photos into tiles, and the
``Denoiser`` that adapts with any entry whole, per tile, or jointly over tiles."""
