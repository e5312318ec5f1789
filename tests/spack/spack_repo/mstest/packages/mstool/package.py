# A build tool: a build-only dependency of mslib and msapp, so it is in no
# build cache but in every index (as a record with in_buildcache: false).
import os

from spack.package import Package, version


class Mstool(Package):
    """Stand-in build tool: no download, no compiler."""

    homepage = "https://example.invalid/mstool"
    has_code = False

    version("1.0")

    def install(self, spec, prefix):
        os.makedirs(prefix.bin)
        tool = os.path.join(prefix.bin, "mstool")
        with open(tool, "w") as f:
            f.write("#!/bin/sh\necho mstool 1.0\n")
        os.chmod(tool, 0o755)
