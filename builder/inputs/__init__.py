"""Pinned inputs: one resolver for every file a build reads from outside the source tree.

Every input (a Debian package, the kernel source package, a wheel, the model file)
is named by what it is and pinned by its sha256.  :class:`~builder.inputs.resolver.Resolver`
asks its sources in order -- the local content-addressed store, an exported input
set, the spec's Debian mirrors (any suite whose index lists that exact version),
Debian's snapshot archive at the lock's resolution time, PyPI -- and checks the
sha256 of every file on every use, so where a file came from never changes a byte
of the image.
"""
