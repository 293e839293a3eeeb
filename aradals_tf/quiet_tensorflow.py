"""Importing TensorFlow without its C++ start-up lines on the terminal.

TensorFlow writes oneDNN, CUDA and absl start-up lines to file descriptor 2
before its own log level applies, so only redirecting the descriptor while
it is imported hides them. The command line does this unless the user asks
for the logs (`ARADALS_TF_DEBUG=1`, or their own `TF_CPP_MIN_LOG_LEVEL`).
"""

import functools
import os
import sys
import tempfile

_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"
_hide = False


def configure(show_logs=False):
    """Decides, once per process, whether the start-up lines are hidden.

    Args:
        show_logs: show them anyway (the user asked for a debug run).
    """
    global _hide
    _hide = not (show_logs or _LOG_LEVEL in os.environ)
    # TensorFlow's info and warnings off; in a multi-worker job its errors too:
    # a lost or mismatched peer is logged from C++ by every collective that
    # aborts, before the Python error that the CLI reports in one line.
    os.environ.setdefault(_LOG_LEVEL, "3" if os.environ.get("TF_CONFIG") else "2")


def import_tensorflow():
    """Imports TensorFlow (and probes its devices, which logs too) with file
    descriptor 2 redirected; what was written is replayed if it fails."""
    if "tensorflow" in sys.modules or not _hide:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def needs_tensorflow(command):
    """Decorator: the quiet import runs before the command's body."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        import_tensorflow()
        return command(*args, **kwargs)

    return wrapper
