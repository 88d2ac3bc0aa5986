"""`python -m fmae`: the same CLI as the `fmae` console script."""

from fmae.cli import main

if __name__ == "__main__":
    main()
