"""The build directory's names, owned here and nowhere else.

- `name_of`: the directory of an input, `<readable stem>-<8 hex of the sha256 of its absolute
  path>`, and whether its merged output is json or jsonl (scripts/build_name.py prints both for
  make at parse time: standard library only, it runs before the virtual environment exists;
  it lives in br/names.py, which loads nothing else, as make runs it on every make).
- `StepDir`: a step's directory and every file in it (the one reader and writer of chunks.mk).
- `step_dir`: where a pipeline's step is, for the verbs that look at one.
"""

import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from br.cli import UserError, note
from br.names import name_of as name_of  # re-exported: the owner of every name

# ----------------------------------------------------------------------------- a step's files
# The one owner of the build directory's names: every module asks here, none spells them.
MANIFEST_LINE = re.compile(r"^CHUNK_IDS :=(.*)$", re.M)


def chunk_id(path: Path) -> str:
    """`chunk_007.jsonl` (or `retry_007_2.jsonl`) -> `007`."""
    return path.stem.split("_")[1]


def hashes_of(requests: Path) -> Path:
    """requests.jsonl's record of its hashes, beside it: requests.hashes (br/prompts/made.py)."""
    return requests.with_suffix(".hashes")


@dataclass(frozen=True)
class StepDir:
    """A step's build directory, `$(BUILD)/<input stem>-<hash>/<step>`, and its files' names.

    requests.jsonl -> chunk_NNN.jsonl -> batch_NNN.id -> results_NNN.jsonl -> merged.json;
    chunks.mk names the chunks, results.list the results; answers/ holds every attempt's rows
    (`<chunk sha256[:32]>-<attempt>.jsonl`), ledger.jsonl every upload and create;
    batch_NNN.cancelled names the batches of a chunk cancelled outside a run (you were told).
    """

    root: Path

    @property
    def requests(self) -> Path:
        return self.root / "requests.jsonl"

    @property
    def skipped(self) -> Path:
        return self.root / "skipped.jsonl"

    @property
    def hashes(self) -> Path:
        return hashes_of(self.requests)

    @property
    def errors(self) -> Path:
        return self.root / "errors.jsonl"

    @property
    def manifest(self) -> Path:
        return self.root / "chunks.mk"

    @property
    def results_list(self) -> Path:
        return self.root / "results.list"

    @property
    def ledger(self) -> Path:
        return self.root / "ledger.jsonl"

    @property
    def answers(self) -> Path:
        return self.root / "answers"

    @property
    def report(self) -> Path:
        return self.root / "report.json"

    @property
    def sample(self) -> Path:
        """`make sample`: the sampled records with their answers."""
        return self.root / "sample.json"

    @property
    def live_sent(self) -> Path:
        """Touched before a live run or a sample sends: answers/ then holds what the chunks of
        the last split do not know, so chunks.mk is remade (the next split leaves them out)."""
        return self.root / "live.sent"

    def live_journal(self) -> Path:
        """A new journal for one live run or sample (br/journal.py): its answers, each appended
        as it arrives. Earlier versions wrote one `live-<hash>.jsonl` per answer, still read
        (every answers/*.jsonl is)."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        return self.answers / f"live-run-{stamp}-{os.getpid()}.jsonl"

    def live_journals(self) -> list[Path]:
        return sorted(self.answers.glob("live-run-*.jsonl")) if self.answers.is_dir() else []

    def merged(self, fmt: str = "json") -> Path:
        return self.root / f"merged.{fmt}"

    def chunk(self, nnn: str) -> Path:
        return self.root / f"chunk_{nnn}.jsonl"

    def batch_id(self, nnn: str) -> Path:
        return self.root / f"batch_{nnn}.id"

    def cancelled(self, nnn: str) -> Path:
        return self.root / f"batch_{nnn}.cancelled"

    def results(self, nnn: str) -> Path:
        return self.root / f"results_{nnn}.jsonl"

    def retry(self, nnn: str, attempt: int) -> Path:
        """The chunk of follow-up attempt `attempt` (>= 1) of chunk `nnn`."""
        return self.root / f"retry_{nnn}_{attempt}.jsonl"

    def retry_id(self, nnn: str, attempt: int) -> Path:
        return self.root / f"retry_{nnn}_{attempt}.id"

    def attempt_input(self, nnn: str, attempt: int) -> Path:
        return self.chunk(nnn) if attempt == 0 else self.retry(nnn, attempt)

    def attempt_id(self, nnn: str, attempt: int) -> Path:
        return self.batch_id(nnn) if attempt == 0 else self.retry_id(nnn, attempt)

    def answers_file(self, chunk_sha256: str, attempt: int) -> Path:
        return self.answers / f"{chunk_sha256[:32]}-{attempt}.jsonl"

    def answer_files(self) -> list[Path]:
        return sorted(self.answers.glob("*.jsonl")) if self.answers.is_dir() else []

    def chunk_info(self, nnn: str) -> Path:
        """chunk_NNN.info: the identities of a chunk's requests (batches/chunk.py)."""
        return self.root / f"chunk_{nnn}.info"

    def chunk_files(self) -> list[Path]:
        return sorted(self.root.glob("chunk_*.jsonl"))

    def result_files(self) -> list[Path]:
        return sorted(self.root.glob("results_*.jsonl"))

    def id_files(self, nnn: str = "*") -> list[Path]:
        """batch_NNN.id, then retry_NNN_K.id by chunk and attempt."""
        retries = sorted(
            self.root.glob(f"retry_{nnn}_*.id"),
            key=lambda p: (chunk_id(p), int(p.stem.rsplit("_")[-1])),
        )
        return sorted(self.root.glob(f"batch_{nnn}.id")) + retries

    def retry_files(self, nnn: str) -> list[Path]:
        """retry_NNN_K.jsonl: the follow-up attempts' requests of chunk `nnn`."""
        return sorted(self.root.glob(f"retry_{nnn}_*.jsonl"))

    def new_download(self) -> Path:
        """A fresh file for an earlier batch's input, fetched to collect its rows."""
        fd, path = tempfile.mkstemp(dir=self.root, prefix=".collect-", suffix=".jsonl")
        os.close(fd)
        return Path(path)

    def new_stage(self) -> Path:
        """A fresh hidden directory where the split stages its chunks before naming them."""
        return Path(tempfile.mkdtemp(dir=self.root, prefix=".split-"))

    def downloads(self) -> list[Path]:
        return sorted(self.root.glob(".collect-*.jsonl"))

    def chunk_ids(self) -> list[str] | None:
        """The chunk ids chunks.mk names, or None when there is no chunks.mk yet."""
        if not self.manifest.exists():
            return None
        m = MANIFEST_LINE.search(self.manifest.read_text(encoding="utf-8"))
        return m[1].split() if m else []

    def results_list_text(self, ids: list[str]) -> str:
        """results.list: each results file with its size and mtime, so make sees a change."""
        lines = []
        for nnn in ids:
            path = self.results(nnn)
            st = path.stat()
            lines.append(f"{path.name} {st.st_size} {st.st_mtime_ns}\n")
        return "".join(lines)

    def manifest_text(self, ids: list[str]) -> str:
        return (
            "# Written by split_requests.py from requests.jsonl: this step's chunks. Do not edit.\n"
            f"CHUNK_IDS := {' '.join(ids)}\n"
        )


def step_dir(directory: Path) -> Path:
    """The step's build directory; when it does not exist, the one `make pipeline` made for the
    same step (BUILD/<name>/pipeline/NN-<step>) if there is exactly one; if there are several
    (the step ran twice), one line naming the B= of each. Else `directory`, as it is."""
    if directory.exists():
        return directory
    step = directory.name
    found = sorted(
        p
        for p in (directory.parent / "pipeline").glob(f"*-{step}")
        if p.name.split("-", 1)[0].isdigit() and p.name.split("-", 1)[1] == step and p.is_dir()
    )
    if len(found) > 1:
        choices = " or ".join(f"B={p}" for p in found)
        raise UserError(
            f"{directory} does not exist, and make pipeline ran step '{step}' {len(found)} "
            f"times; say which: {choices}"
        )
    if found:
        note(f"using {found[0]}: make pipeline ran step '{step}' there (there is no {directory})")
        return found[0]
    return directory


def moved(path: Path, directory: Path, found: Path) -> Path:
    """A file the Makefile named in the step's directory, in the directory found instead."""
    return found / path.name if path.parent == directory else path


def no_step(directory: Path) -> str:
    return (
        f"{directory} does not exist; run make caption STEP={directory.name} (or make pipeline) "
        "first, or set B to the step's build directory"
    )
