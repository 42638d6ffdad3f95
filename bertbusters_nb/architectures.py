from ._moved import forward

__getattr__, __dir__ = forward(__name__, "bertbusters_nb.model.architectures")

if __name__ == "__main__":  # the old command `python -m bertbusters_nb.architectures` still writes the table
    from .model.architectures import main

    main()
