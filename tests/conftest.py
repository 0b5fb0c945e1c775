"""Test configuration: float64 is switched on once, here, for the whole suite."""
import jax

jax.config.update("jax_enable_x64", True)
