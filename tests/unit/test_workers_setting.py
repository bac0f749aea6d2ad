"""--workers: a number, or `auto` (the default), one process per CPU when the ports are
known."""

from server.config import cpus, parse_args

FIXED = ["--listen", "127.0.0.1:50051"]


def test_auto_is_the_default_and_means_one_worker_per_cpu() -> None:
    assert parse_args(FIXED, env={}).worker_count == cpus()
    assert parse_args([*FIXED, "--workers", "auto"], env={}).worker_count == cpus()
    assert parse_args(FIXED, env={"SARAH_WORKERS": "AUTO"}).worker_count == cpus()


def test_a_number_beats_auto_and_the_flag_beats_the_environment() -> None:
    assert parse_args(FIXED, env={"SARAH_WORKERS": "3"}).worker_count == 3
    assert parse_args([*FIXED, "--workers", "1"], env={"SARAH_WORKERS": "auto"}).worker_count == 1


def test_auto_on_port_zero_is_one_process() -> None:
    # Workers on port 0 would each take a port nobody could list for Envoy.
    assert parse_args(["--listen", "127.0.0.1:0"], env={}).worker_count == 1
    assert parse_args(["--listen", "127.0.0.1:0", "--workers", "2"], env={}).worker_count == 2
