# A stand-in compiler, only ever used as an external: Spack 1.x refuses to
# concretize with no compiler configured, even for packages that need none.
from spack.package import InstallError, Package, version


class Mscc(Package):
    """Stand-in compiler (external only)."""

    homepage = "https://example.invalid/mscc"
    has_code = False
    tags = ["compiler"]  # noqa: RUF012 (Spack reads a list)
    # What Spack asks a compiler package for: none here, so it never runs one.
    cc = None
    cxx = None
    verbose_flags = ""

    version("1.0")

    def install(self, spec, prefix):
        raise InstallError("mscc is only used as an external")
