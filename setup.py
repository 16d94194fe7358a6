"""The package list, found rather than written by hand; pyproject.toml holds everything else.

A list kept by hand missed new subpackages (checks, cli, delivery, store, audit) and gave a
wheel that fails with ModuleNotFoundError. pyproject.toml can either discover packages or
list them, not both, and alembic's migrations/ lives beside deltasync/ but installs inside it
as deltasync._migrations ([tool.setuptools.package-dir]), which discovery cannot find; so
both are discovered here.
"""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["deltasync", "deltasync.*"]),
        "deltasync._migrations",
        *(f"deltasync._migrations.{name}" for name in find_packages("migrations")),
    ]
)
