# An application: links mslib, runs with msdata, built with mstool.
import os

from spack.package import Package, depends_on, version


class Msapp(Package):
    """Stand-in application: no download, no compiler."""

    homepage = "https://example.invalid/msapp"
    has_code = False

    version("1.1")
    version("1.0")

    depends_on("mslib", type="link")
    depends_on("msdata", type="run")
    depends_on("mstool", type="build")

    def install(self, spec, prefix):
        os.makedirs(prefix.bin)
        app = os.path.join(prefix.bin, "msapp")
        with open(app, "w") as f:
            f.write(f"#!/bin/sh\necho msapp {spec.version}\n")
        os.chmod(app, 0o755)
