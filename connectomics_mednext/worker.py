"""A daisy worker started by a worker command (``srun``, ``bsub``): pulls one task's blocks until none are left.

``python -m connectomics_mednext.worker <job.json>``, with daisy's ``DAISY_CONTEXT`` in the
environment (the worker command passes the environment on, as ``srun`` and ``bsub`` do).
"""

import sys
from typing import List, Optional

from .daisy_tasks import import_daisy, job_from_file
from .io.json_files import read_json


def main(argv: Optional[List[str]] = None) -> None:
    """Connect to the scheduler and process blocks of the task the job file names.

    Args:
        argv: ``[job file]``; the command line's when None.
    """
    (job_file,) = sys.argv[1:] if argv is None else argv
    process = job_from_file(read_json(job_file))
    client = import_daisy("A blockwise worker").Client()
    while True:
        with client.acquire_block() as block:
            if block is None:
                return
            process(block)


if __name__ == "__main__":
    main()
