# A library built with mstool (build-only) and linked by msapp.
import os

from spack.package import Package, depends_on, version


class Mslib(Package):
    """Stand-in library: no download, no compiler."""

    homepage = "https://example.invalid/mslib"
    has_code = False

    version("1.0")

    depends_on("mstool", type="build")

    def install(self, spec, prefix):
        os.makedirs(prefix.lib)
        os.makedirs(prefix.include)
        with open(os.path.join(prefix.lib, "libmslib.a"), "w") as f:
            f.write(f"mslib {spec.version}\n")
        with open(os.path.join(prefix.include, "mslib.h"), "w") as f:
            f.write("int mslib(void);\n")
