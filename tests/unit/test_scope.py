"""The workspace rule: a key bound to one workspace reaches that one only."""

import pytest

from server.core.errors import PermissionDenied
from server.core.scope import EVERY_WORKSPACE, Scope, require_every_workspace, scoped_workspace

TOKO = Scope(workspace="toko", label="kapso toko")


@pytest.mark.parametrize("requested", ["toko", "other", "", None])
def test_a_key_for_every_workspace_reaches_what_it_asks(requested: str | None) -> None:
    assert scoped_workspace(requested, EVERY_WORKSPACE) == requested


def test_a_bound_key_reaches_its_own_workspace() -> None:
    assert scoped_workspace("toko", TOKO) == "toko"


def test_no_workspace_means_mine_where_it_may_be_left_out() -> None:
    assert scoped_workspace(None, TOKO) == "toko"


@pytest.mark.parametrize("requested", ["other", "", "TOKO", "toko "])
def test_a_bound_key_is_refused_any_other_workspace(requested: str) -> None:
    # "" is the default workspace, not "mine".
    with pytest.raises(PermissionDenied, match="not allowed workspace"):
        scoped_workspace(requested, TOKO)


def test_refusal_names_at_most_64_characters_of_the_workspace() -> None:
    with pytest.raises(PermissionDenied) as caught:
        scoped_workspace("w" * 10_000, TOKO)
    assert len(str(caught.value)) < 120


def test_operations_across_workspaces_need_a_key_for_every_workspace() -> None:
    require_every_workspace(EVERY_WORKSPACE)
    with pytest.raises(PermissionDenied) as caught:
        require_every_workspace(TOKO)
    assert str(caught.value) == ("this operation needs a key for every workspace; "
                                 "'kapso toko' is bound to workspace 'toko'")
