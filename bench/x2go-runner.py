# Runs Debian's x2gobroker-authservice, unchanged, from the tree bench/run.mjs unpacked into
# bench/.cache: python3 x2go-runner.py UNPACKED_SITE_PACKAGES SCRIPT [ARGUMENTS OF THE SCRIPT...]
#
# The one change is where python-pam finds libpam. It loads the library with ctypes
# (CDLL(find_library("pam"))), which LD_PRELOAD cannot interpose: without this, the peer would
# check passwords against the machine's real /etc/pam.d, not the benchmark's sandbox. So
# find_library('pam') still does its usual work (the lookup is part of the peer's cost per check:
# python-pam runs it for every request) but then names pam_wrapper's library, which exports the
# same functions and reads the sandbox's service files.
import ctypes.util
import os
import runpy
import sys

site, script = sys.argv[1], sys.argv[2]
wrapper = os.environ.get('LD_PRELOAD', '')
if not wrapper.endswith('libpam_wrapper.so'):
    sys.exit('x2go-runner: LD_PRELOAD must name libpam_wrapper.so')

_find_library = ctypes.util.find_library


def find_library(name):
    found = _find_library(name)
    return wrapper if name == 'pam' else found


ctypes.util.find_library = find_library
sys.path.insert(0, site)
sys.argv = [script, *sys.argv[3:]]
runpy.run_path(script, run_name='__main__')
