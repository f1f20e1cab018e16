"""The job-side program.

The runner is a few small modules (``runner`` reads the command line and runs the call; ``loading``,
``table``, ``environment``, ``outcome``, ``files`` and ``ranks`` do one part each) that need only the
standard library, and cloudpickle when the payload refers to it, so nothing of slurmbatch has to be
installed on the cluster. :mod:`slurmbatch.remote.bundle` joins them into the one file the session
uploads, whose loader (``compiled``) compiles them once for all tasks; the client imports ``table`` and
``loading`` for the formats it shares with them.
"""
