"""`python -m groupbuy_async`; the installed `groupbuy-async` runs cli.main directly."""

from .cli import main

if __name__ == "__main__":
    main()
