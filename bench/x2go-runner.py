# Runs X2Go's own AuthService (x2gobroker.authservice, from Debian's package, unpacked by
# bench/run.mjs into bench/.cache) on a socket, with nothing else of x2gobroker-authservice's
# start-up (argument parsing, log files). Usage: python3 x2go-runner.py UNPACKED_SITE SOCKET
#
# python-pam loads libpam with ctypes, which LD_PRELOAD cannot interpose: without the patch below
# it would check against the real /etc/pam.d, not the benchmark's sandbox. So find_library('pam')
# is pointed at pam_wrapper's library, which exports the same functions.
import asyncore
import ctypes.util
import logging
import os
import sys

site, socket_path = sys.argv[1], sys.argv[2]
wrapper = os.environ.get('LD_PRELOAD', '')
_find_library = ctypes.util.find_library
ctypes.util.find_library = lambda name: wrapper if name == 'pam' and wrapper else _find_library(name)
sys.path.insert(0, site)

from x2gobroker.authservice import AuthService  # noqa: E402

logger = logging.getLogger('x2gobroker-authservice')
logger.addHandler(logging.NullHandler())
AuthService(socket_path, logger=logger)
asyncore.loop()
