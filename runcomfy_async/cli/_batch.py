"""Batch input: jobs from options, JSON lines or CSV, checked all at once.

Every line is checked field by field before anything is sent, and every bad
line is reported in one go (a user fixing a 50-line file should not learn of
its errors in rounds). Local images are checked whole here, with the
library's own validation, but read again and encoded only when their job is
submitted (the library keeps requests light), so memory does not grow with
the length of the batch.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import attrs

from runcomfy_async import ImageToVideo, ValidationError

from ._base import UsageError, plural

FIELDS: Final = ("key", "prompt", "image", "image_url", "seed", "frames")
"""The fields a batch line (JSON key or CSV column) may have."""

MAX_ERRORS_SHOWN: Final = 50

# A URL scheme has two letters or more, so "C:\\images\\a.png" stays a path.
_URL: Final = re.compile(r"^[a-z][a-z0-9+.-]+:", re.IGNORECASE)
# Keys name download files and journal entries: keep them file-name safe.
_KEY: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# Checks one field at a time against the library's own rules: the other
# fields get values that are known to pass.
_PROBE_URL: Final = "https://example.com/probe.png"
_PROBE_PROMPT: Final = "probe"


@attrs.frozen
class Line:
    """One job as written: a batch line, or the command-line options."""

    where: str
    fields: Mapping[str, Any]
    base_dir: Path
    number: int = 0  # its line number in the file, to sort errors by


@attrs.frozen(kw_only=True)
class JobSpec:
    """One checked job: everything needed to build its request when it is sent.

    Attributes:
        index: Its position in the input, from 0 (blank lines do not count).
        key: Its name (the ``key`` field, else ``line-N`` or ``job-N``).
        where: Where it was written (``jobs.jsonl:3``), for messages.
        prompt: The prompt.
        image: An image URL, or a local file's absolute path.
        local: Whether ``image`` is a local file.
        seed: The seed.
        frames: 121 or 241.

    """

    index: int
    key: str
    where: str
    prompt: str
    image: str
    local: bool
    seed: int
    frames: int


@attrs.define
class Images:
    """Builds each job's request when it is sent; a local file is checked once a run.

    The library's requests are light (a local image is hashed and dropped,
    then read again only when its submit goes out), so one checked request
    per file is kept and varied for each job that uses it.
    """

    _checked: dict[str, ImageToVideo] = attrs.field(factory=dict, init=False)

    def request(self, spec: JobSpec) -> ImageToVideo:
        """Build *spec*'s request (raises ValidationError or OSError if the file changed)."""
        # The frames value was checked in full by check(); the cast is safe.
        frames: Literal[121, 241] = 121 if spec.frames == 121 else 241
        if not spec.local:
            return ImageToVideo(
                prompt=spec.prompt, image_url=spec.image, seed=spec.seed, frames=frames
            )
        checked = self._checked.get(spec.image)
        if checked is None:
            checked = ImageToVideo.from_file(spec.image, prompt=spec.prompt)
            self._checked[spec.image] = checked
        return attrs.evolve(checked, prompt=spec.prompt, seed=spec.seed, frames=frames)


def lines_from_options(
    *,
    prompt: str | None,
    image: str | None,
    count: int,
    seed: int,
    frames: int,
    cwd: Path,
) -> list[Line]:
    """Return the job given by ``--prompt`` and ``--image``, *count* times."""
    fields: dict[str, Any] = {"seed": seed, "frames": frames}
    if prompt is not None:
        fields["prompt"] = prompt
    if image is not None:
        fields["image"] = image
    return [
        Line(where="--prompt/--image", fields={**fields, "key": f"job-{i}"}, base_dir=cwd, number=i)
        for i in range(count)
    ]


def read_batch(path: Path, *, seed: int, frames: int) -> tuple[list[Line], list[tuple[int, str]]]:
    """Read a batch file (``.csv`` by its extension, JSON lines otherwise).

    Returns its lines, each with the defaults filled in and a ``line-N`` key
    where none is given, and every error of form (not yet of content).
    """
    try:
        # newline="": a CSV cell's "\r" is the user's, not a line ending to translate.
        with path.open(encoding="utf-8-sig", newline="") as file:
            text = file.read()
    except FileNotFoundError:
        raise UsageError(f"--batch: no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--batch: cannot read {path}: {exc}") from exc
    reader = _csv_lines if path.suffix.lower() == ".csv" else _json_lines
    lines: list[Line] = []
    errors: list[tuple[int, str]] = []
    for number, fields, error in reader(text):
        where = f"{path}:{number}"
        if error is not None:
            errors.append((number, f"{where}: {error}"))
            continue
        merged = {"seed": seed, "frames": frames, "key": f"line-{number}", **fields}
        lines.append(Line(where=where, fields=merged, base_dir=path.parent, number=number))
    if not lines and not errors:
        errors.append((0, f"{path}: the batch file holds no jobs"))
    return lines, errors


def _json_lines(text: str) -> Iterator[tuple[int, dict[str, Any], str | None]]:
    # JSON lines end at "\n" only: str.splitlines() would also cut at U+2028,
    # U+0085 or \x1e, which JSON strings may hold unescaped.
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except json.JSONDecodeError as exc:
            yield number, {}, f"not a JSON object ({exc.msg}, column {exc.colno})"
            continue
        except (ValueError, RecursionError) as exc:
            # A number over 4,300 digits, or nesting beyond the interpreter's limit.
            yield number, {}, f"not a JSON object we can read ({type(exc).__name__})"
            continue
        if not isinstance(item, dict):
            yield number, {}, f"not a JSON object, but a JSON {type(item).__name__}"
            continue
        yield number, item, None


def _csv_lines(text: str) -> Iterator[tuple[int, dict[str, Any], str | None]]:
    rows = _csv_rows(text)
    first = next(rows, None)
    if first is None:
        return
    _, header, error = first
    if error is not None:
        yield 1, {}, error
        return
    names = [name.strip() for name in header]
    unknown = [name for name in names if name not in FIELDS]
    if unknown or not names:
        yield 1, {}, _unknown_message(unknown, "column")
        return
    for number, row, error in rows:
        if error is not None:
            yield number, {}, error
            return
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(names):
            yield number, {}, f"{len(row)} cells, but the header names {len(names)} columns"
            continue
        fields: dict[str, Any] = {}
        for name, cell in zip(names, row, strict=False):
            if cell.strip():
                fields[name] = _csv_number(cell) if name in {"seed", "frames"} else cell
        yield number, fields, None


def _csv_rows(text: str) -> Iterator[tuple[int, list[str], str | None]]:
    """Yield each row with the number of its first line, or a row that is not CSV, last."""
    # newline="": quoted cells keep their line breaks ("\r" too), and a cell
    # that spans lines is numbered by its first.
    reader = csv.reader(io.StringIO(text, newline=""))
    while True:
        number = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # a cell over csv.field_size_limit(), say
            yield number, [], f"not CSV ({exc})"
            return
        yield number, row, None


def _csv_number(cell: str) -> object:
    # CSV cells are text; a number that is not whole stays text, so the
    # field's own check names it.
    try:
        return int(cell.strip())
    except ValueError:
        return cell


def _unknown_message(unknown: Sequence[str], what: str) -> str:
    names = ", ".join(map(repr, unknown)) if unknown else "none"
    return f"unknown {what}(s) {names}; use {', '.join(FIELDS)}"


def check(
    lines: Sequence[Line],
    *,
    sample_image: str | None = None,
    demo_prompts: Sequence[str] = (),
) -> tuple[list[JobSpec], list[tuple[int, str]]]:
    """Check every line, every field; return the jobs and every error at once.

    *sample_image* stands in for a missing image and *demo_prompts* for a
    missing prompt (the emulator's demo); without them both are required.
    """
    specs: list[JobSpec] = []
    errors: list[tuple[int, str]] = []
    keys: dict[str, str] = {}
    checked_images: dict[str, str | None] = {}
    for index, line in enumerate(lines):
        demo = demo_prompts[index % len(demo_prompts)] if demo_prompts else None
        spec, problems = _check_line(index, line, sample_image, demo, checked_images)
        if spec is not None:
            first = keys.setdefault(spec.key, line.where)
            if first != line.where:
                problems.append(f"key: {spec.key!r} is also the key of {first}")
        if problems:
            errors.extend((line.number, f"{line.where}: {problem}") for problem in problems)
        elif spec is not None:
            specs.append(spec)
    return specs, errors


def _check_line(
    index: int,
    line: Line,
    sample_image: str | None,
    demo_prompt: str | None,
    checked_images: dict[str, str | None],
) -> tuple[JobSpec | None, list[str]]:
    fields = line.fields
    problems: list[str] = []
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        problems.append(_unknown_message(unknown, "key"))
    key = fields.get("key")
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        problems.append(
            f"key: {key!r} is not a key: use 1 to 100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    prompt = fields.get("prompt", demo_prompt)
    seed: Any = fields.get("seed")
    frames: Any = fields.get("frames")
    for name, value, probe in (
        ("prompt", prompt, {"prompt": prompt}),
        ("seed", seed, {"seed": seed}),
        ("frames", frames, {"frames": frames}),
    ):
        if value is None and name == "prompt":
            problems.append("prompt: is required")
            continue
        problem = _probe(**probe)
        if problem is not None:
            problems.append(problem)
    image, local, image_problem = _check_image(line, sample_image, checked_images)
    if image_problem is not None:
        problems.append(image_problem)
    if problems:
        return None, problems
    return (
        JobSpec(
            index=index,
            key=str(key),
            where=line.where,
            prompt=str(prompt),
            image=image,
            local=local,
            seed=int(seed),
            frames=int(frames),
        ),
        problems,
    )


def _probe(**fields: Any) -> str | None:
    """Check the given fields with the library's rules; the rest are known good."""
    values: dict[str, Any] = {"prompt": _PROBE_PROMPT, "image_url": _PROBE_URL, **fields}
    try:
        ImageToVideo(**values)
    except ValidationError as exc:
        return str(exc)
    return None


def _check_image(
    line: Line, sample_image: str | None, checked: dict[str, str | None]
) -> tuple[str, bool, str | None]:
    """Return the image (URL or absolute path), whether it is local, and its problem."""
    fields = line.fields
    if "image" in fields and "image_url" in fields:
        return "", False, "give either 'image' or 'image_url', not both"
    image = fields.get("image", fields.get("image_url"))
    if image is None:
        if sample_image is None:
            return "", False, "image: is required (an https:// URL or a local JPEG or PNG file)"
        return sample_image, False, None
    if not isinstance(image, str) or not image.strip():
        return "", False, "image: must be a non-empty string (a URL or a file path)"
    if _URL.match(image):
        return image, False, _probe(image_url=image)
    path, problem = _local_path(line.base_dir, image)
    if problem is None and path not in checked:
        checked[path] = _check_file(path)
    return path, True, problem or checked[path]


def _local_path(base_dir: Path, image: str) -> tuple[str, str | None]:
    """Return an image's absolute path, or why it is no usable path."""
    try:
        return str((base_dir / Path(image).expanduser()).resolve()), None
    except (OSError, ValueError, RuntimeError) as exc:
        # No such home directory, a NUL byte, a name too long ...
        return "", f"image: {image[:60]!r} is not a usable file path ({exc})"


def _check_file(path: str) -> str | None:
    try:
        if not Path(path).is_file():
            return f"image: no such file: {path}"
        # The library's whole-file check: type, size, dimensions, ratio, and
        # that the image decodes; the data is dropped until the job is sent.
        ImageToVideo.from_file(path, prompt=_PROBE_PROMPT)
    except OSError as exc:
        return f"image: cannot read {path}: {exc.strerror or exc}"
    except ValidationError as exc:
        return f"image {path}: {exc.message.partition(': ')[2] or exc.message}"
    return None


def error_lines(errors: Iterable[tuple[int, str]]) -> list[str]:
    """Return the errors in line order (at most :data:`MAX_ERRORS_SHOWN`), then how many more."""
    errors = sorted(errors, key=lambda error: error[0])
    shown = [text for _, text in errors[:MAX_ERRORS_SHOWN]]
    if len(errors) > MAX_ERRORS_SHOWN:
        shown.append(f"... and {plural(len(errors) - MAX_ERRORS_SHOWN, 'more error')}")
    return shown
