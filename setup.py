"""Build the optional native fast path of the Kineto importer (pyproject.toml holds the metadata).

`optional=True`: without a C compiler the install still succeeds and the importer uses its
pure-Python path (tools/telemetry/kineto.py), which gives the same results, only slower.
"""
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tools.telemetry._kineto_fast",
            ["tools/telemetry/_kineto_fast.c"],
            extra_compile_args=["-O2", "-std=gnu99"],
            optional=True,
        )
    ]
)
