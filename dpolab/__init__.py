"""dpolab: check the theory of preference learning (DPO and its relatives) numerically.

`dpolab.load(DIR)` reads any dpolab output folder as an `xarray.Dataset` (see `dpolab.results`).
"""


def __getattr__(name):
    if name == "load":  # imported on first use: `import dpolab` stays free of xarray and JAX
        from dpolab.results import load

        return load
    raise AttributeError(f"module 'dpolab' has no attribute {name!r}")
