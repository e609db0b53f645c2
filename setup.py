"""Only the C kernels of the lookups live here; all metadata is in pyproject.toml.

The extensions are optional: where they cannot be compiled, ``semhash.index.lookup`` and
``semhash.index.near_lookup`` fall back to their NumPy implementations, which return
identical results, only slower.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "semhash.index._lookup",
            sources=["index/_lookup.c"],
            extra_compile_args=["-O3", "-Wall", "-Wno-unused-function"],
            optional=True,
        ),
        Extension(
            "semhash.index._near",
            sources=["index/_near.c"],
            extra_compile_args=["-O3", "-Wall"],
            optional=True,
        ),
    ]
)
