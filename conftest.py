"""pytest setup shared by the unit tests and the notebooks that nbmake runs.

Notebooks run on the `smoke` profile (tiny offline model and data) unless LORA_PROFILE is set;
nbmake's kernels inherit this environment. Torch gets one thread per core.
"""

import os

os.environ.setdefault("LORA_PROFILE", "smoke")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from utils.config import set_threads  # noqa: E402

set_threads()
