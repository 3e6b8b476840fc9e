"""The one exception type that means "the user's input is wrong"."""


class UserError(Exception):
    """A mistake in the user's input (config, file, model, data, command line).

    The CLI prints its message as one line and exits with status 2, without a
    traceback. The message must name the file, key or image at fault.
    """
