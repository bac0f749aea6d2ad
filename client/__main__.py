"""`python -m client`: the `sarah` command line."""

from client.cli import main

if __name__ == "__main__":
    main()
