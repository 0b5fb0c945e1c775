"""Parameter sweeps: a TOML spec (spec), the simulations it can name (simulations), the chunked
resumable store and local backend (engine), the drivers (run) and the Ray backend (ray)."""
