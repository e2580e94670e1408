"""Test-time adaptation as data: the registry's entries (meta-test among them), the functional inner
loop they step with, the one executor ``adapt_image``, ``select:`` grids, and the one evaluator
that scores every study row with an entry."""
