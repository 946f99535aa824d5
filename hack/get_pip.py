"""Stand-in for ansible-test's get-pip bootstrap script.

ansible-test downloads get-pip.py from a host outside the package registries.
This does the same job with the standard library's ensurepip and PyPI:
bootstrap pip, then install the exact packages ansible-test asked for.
"""
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, "-m", "pip", "install", "--disable-pip-version-check"] + args)
