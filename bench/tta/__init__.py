"""Test-time adaptation families as registry entries (issue #15): the registry, the ZS-N2N loss,
the classical anchor, the one step loop and the one runner ``adapt_image``."""
