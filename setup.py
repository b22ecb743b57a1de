"""Build the optional compiled core (`cargohold._core`) from `_ext/`.

The extension is optional: when Cython or a C compiler is missing the build
still succeeds and cargohold runs on its pure-Python twin (`_fallback.py`),
exactly as msgpack-python does.
"""

import os

from setuptools import Extension, setup

ext_modules = []
if not os.environ.get("CARGOHOLD_PUREPYTHON"):
    try:
        from Cython.Build import cythonize
    except ImportError:  # no Cython at build time: pure-Python install
        cythonize = None
    if cythonize is not None:
        ext_modules = cythonize(
            [Extension("cargohold._core", ["_ext/_core.pyx"])],
            compiler_directives={"language_level": "3"},
        )
        for ext in ext_modules:
            ext.optional = True  # a failed compile warns and installs the fallback (cythonize drops the flag)

setup(ext_modules=ext_modules)
