# Run-time data of msapp, in two versions.
import os

from spack.package import Package, version


class Msdata(Package):
    """Stand-in data package: no download, no compiler."""

    homepage = "https://example.invalid/msdata"
    has_code = False

    version("2.0")
    version("1.0")

    def install(self, spec, prefix):
        os.makedirs(prefix.share)
        with open(os.path.join(prefix.share, "msdata.txt"), "w") as f:
            f.write(f"msdata {spec.version}\n")
