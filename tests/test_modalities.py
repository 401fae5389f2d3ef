import pytest

from model.modalities import (BENCH_VIEWS, DIRECTION_NAMES, DIRECTIONS, DUAL_DIRECTIONS, SINGLE_DIRECTIONS, VIEWS,
                              canonical_view, view_of)


def test_twelve_directions_over_the_six_views():
    assert len(DIRECTION_NAMES) == len(set(DIRECTION_NAMES)) == 12
    assert DIRECTION_NAMES == ("t2v", "v2t", "t2a", "a2t", "v2a", "a2v", "t2av", "av2t", "a2tv", "tv2a", "v2at", "at2v")
    for name, d in DIRECTIONS.items():
        assert canonical_view(d.query) in BENCH_VIEWS and canonical_view(d.gallery) in BENCH_VIEWS
        assert set(d.query).isdisjoint(d.gallery), name  # no modality on both sides
        assert d.kind == ("single" if name in SINGLE_DIRECTIONS else "dual")
    assert all(DIRECTIONS[n].kind == "dual" for n in DUAL_DIRECTIONS)


def test_every_dual_direction_spans_all_three_modalities():
    for name in DUAL_DIRECTIONS:
        d = DIRECTIONS[name]
        assert set(view_of(d.query)) | set(view_of(d.gallery)) == {"T", "V", "A"}


@pytest.mark.parametrize("alias,canonical", [("vt", "tv"), ("va", "av"), ("ta", "at"), ("AVT", "tva"), ("t", "t")])
def test_view_names_are_order_free(alias, canonical):
    assert canonical_view(alias) == canonical
    assert VIEWS[canonical] == view_of(alias)


@pytest.mark.parametrize("bad", ["", "x", "tt", "tvx"])
def test_unknown_views_are_refused(bad):
    with pytest.raises(ValueError, match="unknown view"):
        view_of(bad)
