"""`python -m radretrieve` == the `radretrieve` console script."""

from radretrieve.cli.app import entry

entry()
