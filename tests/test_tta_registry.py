"""The adaptation registry: its entries, published values, overrides and the pairing rule."""
import pytest

import methods
from bench.adaptation import registry as R
from bench.core.errors import ConfigError


def test_required_entries_with_their_published_values():
    assert {"none", "alg3", "official", "oracle", "lan-offset", "ssl-finetune", "zs-n2n", "nlm"} <= set(R.names())
    alg3, official, oracle = R.get("alg3"), R.get("official"), R.get("oracle")
    assert (alg3.moves, alg3.loss, alg3.optimizer, alg3.steps, alg3.lr, alg3.mask_threshold, alg3.predict_after) \
        == ("heads", "aux-mask", "sgd", 5, 1e-5, None, "last")
    assert (official.moves, official.optimizer, official.lr, official.mask_threshold, official.predict_after,
            official.steps) == ("official-heads", "adam", 1e-5, 0.5, "before-last", 5)
    assert "real_denoiser.py" in official.citation and "1051" in official.citation  # the freeze it follows
    assert official.updates_behind_prediction == 4 and alg3.updates_behind_prediction == 5
    assert (oracle.moves, oracle.steps, oracle.optimizer, oracle.loss, oracle.evaluation_only) \
        == (alg3.moves, alg3.steps, alg3.optimizer, "oracle", True)
    lan, ft, zs = R.get("lan-offset"), R.get("ssl-finetune"), R.get("zs-n2n")
    assert (lan.moves, lan.loss, lan.optimizer, lan.lr, lan.steps) == ("offset", "zs-n2n", "adam", 5e-4, 20)
    assert (ft.moves, ft.loss, ft.optimizer, ft.lr) == ("all", "zs-n2n", "adam", 5e-6)
    assert (zs.moves, zs.optimizer, zs.lr, zs.steps, zs.halve_lr_at) == ("fresh", "adam", 1e-3, 2000, 1500)
    assert "chjinny/LAN" in lan.citation and "CVPR 2023" in zs.citation
    nlm = R.get("nlm")
    assert nlm.moves == "classical" and nlm.options["h_factor"] == 0.8 and not nlm.learns
    assert [R.get(n).requires for n in ("alg3", "oracle", "lan-offset", "zs-n2n", "nlm")] \
        == ["aux-head+mask", "aux-head", "restorer", "nothing", "nothing"]


def test_unknown_name_is_one_line_listing_the_known_ones():
    with pytest.raises(ConfigError) as e:
        R.get("lan")
    msg = str(e.value)
    assert "\n" not in msg and "'lan'" in msg and all(n in msg for n in R.names())


def test_oracle_is_never_selectable():
    assert "oracle" in R.names() and "oracle" not in R.names(selectable=True)
    with pytest.raises(ConfigError, match="evaluation-only"):
        R.get_selectable("oracle")
    assert R.get_selectable("lan-offset") is R.get("lan-offset")


def test_describe_rows():
    rows = R.describe()
    assert [r["name"] for r in rows] == R.names()
    for r in rows:
        assert {"name", "moves", "loss", "optimizer", "steps", "lr", "description", "citation"} <= set(r)
        assert r["description"] and r["citation"] and "\n" not in r["description"]


def test_overrides_and_their_validation():
    quick = R.get("zs-n2n").with_(steps=3, lr=2e-3)
    assert (quick.steps, quick.lr, quick.halve_lr_at, quick.name) == (3, 2e-3, 1500, "zs-n2n")
    assert R.get("zs-n2n").steps == 2000  # the registry entry itself is unchanged
    for bad, match in [(dict(steps=-1), "steps -1"), (dict(steps=2.5), "steps 2.5"), (dict(lr=float("nan")), "lr nan"),
                       (dict(optimizer="rmsprop"), "optimizer 'rmsprop'"), (dict(mask_threshold=1.5), "mask_threshold"),
                       (dict(predict_after="first"), "predict_after 'first'"), (dict(moves="all"), "cannot override moves")]:
        with pytest.raises(ConfigError, match=match) as e:
            R.get("alg3").with_(**bad)
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="'nlm'.*no steps"):
        R.get("nlm").with_(steps=3)


def test_impossible_pairing_is_one_line():
    with pytest.raises(ConfigError) as e:
        R.check_pairing("alg3", "ridnet")
    msg = str(e.value)
    assert "\n" not in msg and "'alg3'" in msg and "'ridnet'" in msg and "auxiliary head" in msg
    with pytest.raises(ConfigError, match="'oracle' cannot run on method 'mirnet'"):
        R.check_pairing("oracle", "mirnet")
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        R.check_pairing("alg3", "nope")
    for method in ("ridnet", "mirnet", "ours", "chi"):  # by name: built on the meta device, no memory
        for name in ("none", "lan-offset", "ssl-finetune", "zs-n2n", "nlm"):
            R.check_pairing(name, method)
    R.check_pairing("alg3", "ours")
    R.check_pairing("official", methods.create("ours", base=8, scale=4, mask_base=8))  # a built model
    assert R.compatible("ridnet") == ["none", "lan-offset", "ssl-finetune", "zs-n2n", "nlm"]
    assert set(R.compatible("ours")) == set(R.names())


def test_bind_follows_the_method_recipe():
    assert R.bind("alg3", "ours") == R.get("alg3")
    assert R.bind("alg3", "ours-rl").loss == "aux-rec"  # meta-trained with the unmasked L_rec
    assert R.bind("official", "ours-body-head").moves == "all"  # body + heads in the inner loop
    assert R.bind("oracle", "ours-body-head").moves == "all"
    assert R.bind("lan-offset", "ridnet") == R.get("lan-offset")
    with pytest.raises(ConfigError, match="cannot run on method 'ridnet'"):
        R.bind("alg3", "ridnet")


# ---- the protocol: moves and losses are objects, named in the entries ----------------------------------

def test_every_built_in_entry_is_written_with_the_protocol():
    from bench.adaptation.families import LOSSES, MOVES, Loss, Moves

    for e in R.REGISTRY.values():
        assert isinstance(e.mover, Moves) and e.mover is MOVES[e.moves]
        assert isinstance(e.objective, Loss) and e.objective is LOSSES[e.loss]
        assert e.learns == e.mover.learns and e.source == "built-in"


def test_an_entry_may_carry_its_own_objects_and_keeps_their_names():
    import pickle

    from bench.adaptation.families import Loss, RestorerWeights

    class LastConv(RestorerWeights):
        name = "last-conv"

        def select(self, restorer):
            return dict(list(restorer.named_parameters())[-1:])

    class Twice(Loss):
        name = "twice-zs"

        def bind(self, entry, model, moved, clean):
            return R.get("zs-n2n").objective.bind(entry, model, moved, clean)

    e = R.Adaptation("mine", LastConv(), Twice(), "d", "c", optimizer="adam", steps=2, lr=1e-3)
    e.validate()
    assert (e.moves, e.loss, e.requires) == ("last-conv", "twice-zs", "restorer")
    assert e.describe()["moves"] == "last-conv" and "moves_impl" not in e.describe()
    assert e.with_(steps=3).mover is e.mover
    R.probe_moves(e, "adaptation 'mine'")
    assert pickle.loads(pickle.dumps(R.get("official"))) == R.get("official")


def test_an_entry_that_moves_nothing_or_reuses_a_family_name_is_one_line():
    from bench.adaptation.families import Loss, RestorerWeights

    class Nothing(RestorerWeights):
        name = "nothing"

        def select(self, restorer):
            return {}

    class Fake(Loss):
        name = "aux-mask"

    cases = [(R.Adaptation("a", "none", "zs-n2n", "d", "c"), "moves no parameter"),
             (R.Adaptation("b", "offset", "aux-rec", "d", "c", optimizer="sgd", steps=1, lr=1.0), "heads or weights"),
             (R.Adaptation("c", "all", Fake(), "d", "c", optimizer="sgd", steps=1, lr=1.0), "name of a built-in loss"),
             (R.Adaptation("d", "sideways", "zs-n2n", "d", "c"), "moves 'sideways'")]
    for entry, words in cases:
        with pytest.raises(ConfigError, match=words) as e:
            entry.validate()
        assert "\n" not in str(e.value) and f"adaptation {entry.name!r}" in str(e.value)
    still = R.Adaptation("e", Nothing(), "zs-n2n", "d", "c", optimizer="sgd", steps=1, lr=1.0)
    still.validate()
    with pytest.raises(ConfigError, match="moves no parameter"):
        R.probe_moves(still, "adaptation 'e'")
