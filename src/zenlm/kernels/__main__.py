"""`python -m zenlm.kernels`: build the C++ kernels now (make runs it at install time)."""

import sys
import time

from zenlm.kernels.build import KernelBuildError, build, cache_dir


def main() -> int:
    """Build, print where the library is and how long it took; 1 if the build failed."""
    start = time.perf_counter()
    try:
        path = build()
    except KernelBuildError as exc:
        print(f"zenlm kernels: build failed, int4 will run without them:\n{exc}", file=sys.stderr)
        return 1
    print(f"zenlm kernels: {path} ({time.perf_counter() - start:.1f} s; cache {cache_dir()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
