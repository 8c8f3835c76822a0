"""``python -m ddprofiler``: the command line (``ddprofiler.cli.main``).

A Ctrl-C while the command line is still loading (its first few hundred milliseconds)
ends it like one later: ``ddprofiler: interrupted`` and exit 130, never a traceback.
"""
import sys

try:
    from .cli import main
except KeyboardInterrupt:
    sys.stderr.write("ddprofiler: interrupted\n")
    sys.exit(130)

if __name__ == "__main__":
    main(prog_name="python -m ddprofiler")
