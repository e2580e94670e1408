"""``bench ablate``: a base method and one-component-off variants, run as one study.

Each flag switches one component off, as a recipe field or a preset override of the base — never
a branch in a trainer. Variants share every stage they have in common with the base (e.g.
``--no-metatest`` reuses the base's whole training; ``--first-order`` its pre-training).
"""
from __future__ import annotations

from dataclasses import dataclass

from bench.core.errors import ConfigError


@dataclass(frozen=True)
class Ablation:
    flag: str
    label: str
    recipe: tuple[tuple[str, object], ...] = ()
    metatest: bool | None = None
    set: tuple[str, ...] = ()


ABLATIONS: dict[str, Ablation] = {a.flag: a for a in [
    Ablation("no-pretrain", "random init instead of MAXL", recipe=(("pretrain", "none"),)),
    Ablation("no-mask", "L_rec instead of L_MaskRec (pre-training, MTL, meta-test)",
             recipe=(("pretrain_aux", "rl"), ("aux_loss", "rl"))),
    Ablation("no-grad-loss", "no L_G in MAXL", recipe=(("grad_loss", False),)),
    Ablation("body-and-head", "inner loop updates body + heads", recipe=(("inner_scope", "all"),)),
    Ablation("no-metatest", "no test-time adaptation", metatest=False),
    Ablation("first-order", "first-order MTL", set=("finetune.first_order=true",)),
]}


def ablation_study(base: str, flags: list[str]):
    """The study ``(name, StudySpec)``. Rows: the base, one row per flag, and all flags together
    when there are several. (The table above is read by the command line before torch loads.)"""
    from bench.studies.plan import check_study, meta_learned_method
    from bench.studies.spec import RowSpec, StudySpec

    if not flags:
        raise ConfigError(f"bench ablate: give at least one of --{', --'.join(ABLATIONS)}")
    meta_learned_method(base, f"bench ablate: base {base!r} is not a meta-learned method; its components cannot "
                              "be ablated")

    def row(name: str, chosen: list[Ablation]):
        recipe = {k: v for a in chosen for k, v in a.recipe}
        metatest = False if any(a.metatest is False for a in chosen) else None
        return RowSpec(name=name, method=base, recipe=recipe, metatest=metatest,
                       set=[s for a in chosen for s in a.set])

    chosen = [ABLATIONS[f] for f in flags]
    rows = [row(f"{base} (base)", [])] + [row(f"{base} --{a.flag}", [a]) for a in chosen]
    if len(chosen) > 1:
        rows.append(row(f"{base} " + " ".join(f"--{a.flag}" for a in chosen), chosen))
    spec = StudySpec(title=f"Ablation of {base}: " + "; ".join(f"--{a.flag}: {a.label}" for a in chosen),
                     rows=rows)
    check_study(spec, "bench ablate")
    return "ablate-" + base + "-" + "-".join(sorted(flags)), spec
