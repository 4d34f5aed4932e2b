"""Coverage in every Python process of the mutation bench's coverage pass (bench/mutation_auto.py).

On PYTHONPATH only during that pass. With KDPIPE_COV_DIR set, each process (pytest, its xdist workers,
and the `accelerate launch` workers and other subprocesses that tests start) measures the repository's
sources, labelled with the test that is running: the pytest plugin beside this file switches the label
per test and exports it as KDPIPE_COV_CONTEXT, which subprocesses inherit.
"""
import os

if os.environ.get("KDPIPE_COV_DIR"):
    import atexit

    import coverage

    _cov = coverage.Coverage(data_file=os.path.join(os.environ["KDPIPE_COV_DIR"], ".coverage"), data_suffix=True,
                             source=os.environ["KDPIPE_COV_SOURCE"].split(os.pathsep), config_file=False,
                             context=os.environ.get("KDPIPE_COV_CONTEXT") or None)
    _cov.start()

    def _save():
        _cov.stop()
        _cov.save()

    atexit.register(_save)
