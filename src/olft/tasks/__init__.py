"""GLUE tasks: the registry, readers, metrics and deterministic sampling.

`registry` holds the `Task` records and `Example`; `io` reads the original GLUE TSV layout
(`load_glue`, and its row ids: `glue_ids`), the `datasets` library (`load_hf`) and a user's
CSV/TSV/JSONL, labelled or not (`read_file`; `load_file` when labels are required); `metrics`
scores predictions (`score`: as shown to a person, undefined scores named); `sampling` draws
seeded subsets. Everything is re-exported here, so callers write `from olft import tasks;
tasks.load_glue(...)`.
"""

from olft.errors import OlftError
from olft.tasks.io import HF_DATASET, ID_COLUMNS, LoadedFile, glue_ids, load_file, load_glue, load_hf, read_file
from olft.tasks.metrics import Scores, compute_metrics, headline, score
from olft.tasks.registry import TASKS, Example, Line, Task, get_task
from olft.tasks.sampling import disjoint_subsets, sample_split

__all__ = [
    "HF_DATASET", "ID_COLUMNS", "TASKS", "Example", "Line", "LoadedFile", "OlftError", "Scores", "Task", "compute_metrics",
    "disjoint_subsets", "get_task", "glue_ids", "headline", "load_file", "load_glue", "load_hf", "read_file", "sample_split", "score",
]
