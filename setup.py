"""Only the C kernel of the Hamming lookup lives here; all metadata is in pyproject.toml.

The extension is optional: where it cannot be compiled, ``semhash.index.lookup`` falls back
to its NumPy implementation, which returns identical results, only slower.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "semhash.index._lookup",
            sources=["index/_lookup.c"],
            extra_compile_args=["-O3", "-Wall", "-Wno-unused-function"],
            optional=True,
        )
    ]
)
