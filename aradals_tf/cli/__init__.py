"""The `aradals-tf` command line: `train`, `evaluate`, `robustness`, `compare`, `export`, `predict`.

Each command reads its arguments, makes one library call and prints the result.
`train`'s options are `experiments.TrainConfig`'s fields and every choice list
comes from the library, so the CLI restates none of them. TensorFlow is imported
only inside commands (`--help` answers at once), its C++ start-up logging hidden
unless `ARADALS_TF_DEBUG=1` or `TF_CPP_MIN_LOG_LEVEL` is set. Bad input ends with
a one-line `Error: ...` and exit status 1, never a traceback (`ARADALS_TF_DEBUG=1`
shows it anyway).
"""

import os
import sys

import click

from aradals_tf import quiet_tensorflow
from aradals_tf.cli import runs  # noqa: F401  (registers train, evaluate, robustness)
from aradals_tf.cli import serving  # noqa: F401  (registers export, predict)
from aradals_tf.cli import study  # noqa: F401  (registers compare)
from aradals_tf.cli.group import DEBUG
from aradals_tf.cli.group import cli

__all__ = ["cli", "main"]

_USER_ERRORS = (ValueError, OSError, KeyError)


def main(argv=None):
    """Console-script entry point: runs the CLI with one-line errors."""
    quiet_tensorflow.configure(show_logs=bool(os.environ.get(DEBUG)))
    try:
        code = cli.main(args=argv, prog_name="aradals-tf", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted; nothing half-written was left behind.", err=True)
        sys.exit(130)
    except Exception as error:  # noqa: BLE001 - user errors become one line
        if os.environ.get(DEBUG) or not _is_user_error(error):
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        click.echo(f"Error: {message}", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _is_user_error(error):
    if isinstance(error, _USER_ERRORS):
        return True
    # TensorFlow's InvalidArgumentError (e.g. a graph assertion on bad data).
    return type(error).__name__ == "InvalidArgumentError"


if __name__ == "__main__":
    main()
