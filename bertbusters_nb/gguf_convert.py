from ._moved import forward

__getattr__, __dir__ = forward(__name__, "bertbusters_nb.model.gguf")
