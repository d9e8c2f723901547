"""jaxdiff: study and control memorization in diffusion models with JAX/Flax on device meshes."""

__version__ = '0.1.0'
