"""PostgreSQL URLs as the service connects with them: one host or several (a failover
cluster), the service's own settings added, the URL's kept."""

import pytest
from psycopg.conninfo import conninfo_to_dict

from server.storage.database import open_database, postgres_conninfo

CLUSTER = "postgresql://sarah:S3cret@pg1:5432,pg2:5433,pg3:5434/sarah"


def _params(url: str) -> dict[str, object]:
    return dict(conninfo_to_dict(postgres_conninfo(url)))


def test_a_multi_host_url_keeps_every_host_and_port_in_order() -> None:
    params = _params(CLUSTER + "?target_session_attrs=read-write")
    assert params["host"] == "pg1,pg2,pg3" and params["port"] == "5432,5433,5434"
    assert (params["user"], params["password"], params["dbname"]) == ("sarah", "S3cret", "sarah")
    assert params["target_session_attrs"] == "read-write"


def test_several_hosts_without_target_session_attrs_get_read_write() -> None:
    assert _params(CLUSTER)["target_session_attrs"] == "read-write"
    assert _params(CLUSTER + "?target_session_attrs=any")["target_session_attrs"] == "any"
    assert "target_session_attrs" not in _params("postgresql://sarah@pg1/sarah")


def test_the_service_options_come_after_the_urls_own_so_they_win() -> None:
    params = _params("postgresql://u@db/sarah?options=-c%20statement_timeout%3D5s")
    assert params["options"] == "-c statement_timeout=5s -c lock_timeout=5000"


def test_connect_timeout_and_keepalives_default_but_the_url_decides() -> None:
    params = _params("postgresql://u@db/sarah")
    assert (params["connect_timeout"], params["keepalives"], params["keepalives_idle"],
            params["keepalives_interval"], params["keepalives_count"]) == ("5", "1", "5", "2", "3")
    assert _params("postgresql://u@db/sarah?connect_timeout=2")["connect_timeout"] == "2"


def test_open_database_takes_a_multi_host_url_that_playhouse_would_refuse() -> None:
    db = open_database(CLUSTER, pool_size=2)  # connects only when used
    assert "host=pg1,pg2,pg3" in db.database and "port=5432,5433,5434" in db.database


@pytest.mark.parametrize("url", ["postgresql://u:S3cret@db/sarah?nosuch=1",
                                 "mysqlx://u:S3cret@db/sarah"])
def test_a_url_psycopg_cannot_read_is_unsupported_and_its_password_hidden(url: str) -> None:
    with pytest.raises(ValueError, match="unsupported database URL") as refused:
        open_database(url)
    assert "S3cret" not in str(refused.value) and "***" in str(refused.value)
