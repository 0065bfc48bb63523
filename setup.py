"""The one compiled part of qdesign: exact counting kernels for the step search
(``src/qdesign/quantize/_counting.c``). It is optional: where no C compiler is
found the build goes on without it, and ``qdesign.quantize.step_search`` uses
NumPy, with the same results. Everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "qdesign.quantize._counting",
            ["src/qdesign/quantize/_counting.c"],
            # -ffp-contract=off: the prefix sums must round as NumPy's cumsum does
            # (no fused multiply-add); no -ffast-math, no -march
            extra_compile_args=["-O2", "-ffp-contract=off", "-fno-fast-math"],
            optional=True,
        )
    ]
)
