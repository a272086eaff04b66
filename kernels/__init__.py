"""Triton kernel sources for nlfs (installed as the package ``nlfs.kernels``).

* ``special.py``: fp32 special functions from core ``tl`` ops (GPU and TRITON_INTERPRET=1 alike);
* ``templates.py``: the two kernel templates the Triton backend fills with generated code;
* ``grad_scale.py``: backward's in-place scaling by the upstream gradient, skipped on the device at 1;
* ``fit_special.py``: regenerates the Chebyshev coefficients in ``special.py`` (needs scipy).

Importing this package does not import triton; ``special`` does.
"""
