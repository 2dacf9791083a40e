"""Package discovery for the one `supernode` namespace spread over component folders.

setuptools' `packages.find` cannot map one namespace to several `where` folders, so map each
sub-package to its folder here; everything else lives in pyproject.toml.
"""

from setuptools import find_namespace_packages, setup

COMPONENT_DIRS = ("crds", "kube", "httpserver", "operator", "engine", "router", "cli")

packages: list[str] = []
package_dir: dict[str, str] = {}
for root in COMPONENT_DIRS:
    for pkg in find_namespace_packages(where=root, include=["supernode.*"]):
        packages.append(pkg)
        package_dir[pkg] = f"{root}/{pkg.replace('.', '/')}"

setup(packages=packages, package_dir=package_dir)
