"""Package discovery for the one `supernode` namespace spread over component folders.

setuptools' `packages.find` cannot map one namespace to several `where` folders, so map each
sub-package to its folder here; everything else lives in pyproject.toml.
"""

from setuptools import Extension, find_namespace_packages, setup

COMPONENT_DIRS = ("crds", "kube", "httpserver", "operator", "engine", "router", "cli")

packages: list[str] = []
package_dir: dict[str, str] = {}
for root in COMPONENT_DIRS:
    for pkg in find_namespace_packages(where=root, include=["supernode.*"]):
        packages.append(pkg)
        package_dir[pkg] = f"{root}/{pkg.replace('.', '/')}"

# The router's fast pre-tokenizer (supernode.api.fasttokens). Optional: without a C compiler the install
# still succeeds and prompts are encoded by the `tokenizers` library alone, only slower.
fasttokens = Extension(
    "supernode.api._fasttokens", optional=True, extra_compile_args=["-O2"],
    sources=[f"crds/csrc/fasttokens/{name}.c" for name in ("module", "pretok", "bpe", "cache")],
    depends=["crds/csrc/fasttokens/fasttokens.h"],
)

setup(packages=packages, package_dir=package_dir, ext_modules=[fasttokens])
