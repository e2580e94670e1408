"""An example ttaid-bench plugin (docs/extending.md): a DnCNN-style denoiser and a Noise2Self-style
blind-spot adaptation, registered through entry points in this package's pyproject.toml."""
