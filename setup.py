"""Package discovery (the metadata is in pyproject.toml).

flows/, tasks/ and schemas/ stand at the top level, as the design card asks, and install as
alignflow.flows, alignflow.tasks and alignflow.schemas, so that no generic top-level name (`tasks`)
lands in site-packages. Every package under them and under alignflow/ is found here, so a new
subpackage can never be left out of a wheel.
"""

from setuptools import find_packages, setup

MAPPED = {"alignflow.flows": "flows", "alignflow.tasks": "tasks", "alignflow.schemas": "schemas"}

packages = find_packages(include=["alignflow", "alignflow.*"])
package_dir = {"alignflow": "alignflow"}
for name, folder in MAPPED.items():
    for found in ["", *find_packages(folder)]:
        packages.append(f"{name}.{found}".rstrip("."))
        package_dir[f"{name}.{found}".rstrip(".")] = f"{folder}/{found.replace('.', '/')}".rstrip("/")

setup(packages=sorted(packages), package_dir=package_dir)
