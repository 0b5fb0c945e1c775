"""The checks: each theory claim as a falsifiable computation with a verdict (`result`), one module
per suite, each with a `CHECKS` table; `dpolab.verify` holds the catalogue of suites."""
