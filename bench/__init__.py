"""The benchmark harness of issue 7: `make bench`, `python -m bench`; see bench/README.md."""
