"""The `s3rt` subcommands: one module each, with `add_arguments(parser)` and `main(args) -> int`.
The command line (`s3rt.cli`) is a shell over them; they are a shell over the library."""


class UserError(Exception):
    """Bad input: printed as one clear line, exit code 2, no traceback."""
