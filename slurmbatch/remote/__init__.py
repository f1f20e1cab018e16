"""The job-side program.

``runner.py`` is uploaded to the cluster as a single file and run by each batch script. It needs only
the standard library and cloudpickle, so nothing of slurmbatch has to be installed on the cluster.
"""
