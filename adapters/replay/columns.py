"""Reading data files into columns, and checking the columns row by row, vectorised.

Guarantees:
- files are parsed by pandas' C parser (CSV), ``json`` (JSON) or pyarrow (feather,
  parquet), told apart by content (magic bytes, first character), not by extension;
  column names are matched case-insensitively;
- :class:`RowCheck` validates whole columns with numpy; only when a check fails, and
  only for the first failing row, does it build a message and find the row's place in
  the file (its 1-based line in CSV and JSON, its 1-based row in binary tables), so
  valid files pay only for the vectorised checks;
- the first problem reported is the one on the earliest row; on one row, the first
  column checked wins (time, then price, then the rest);
- a CSV line whose number of fields differs from the header's is a malformed row
  (pandas would silently drop extra fields when reading selected columns): the
  fields are counted by a vectorised scan of the bytes (a ``csv`` module pass when the
  file has quotes), which also gives every row its line number;
- with ``skip_bad_rows`` nothing is raised for rows: bad rows are masked and counted.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd
import pyarrow.ipc as pa_ipc
import pyarrow.parquet as pa_parquet
from numpy.typing import NDArray

from adapters.replay.series import ReplayError

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
Mask = NDArray[np.bool_]

#: Numeric times at or above this are milliseconds (as seconds they would be after
#: the year 5138); seconds must stay below it.
_MS_THRESHOLD = 1e11
_BOM = b"\xef\xbb\xbf"

Kind = Literal["csv", "json", "feather", "parquet"]


class Locator(Protocol):
    """Turns a data-row index and a field name into the error for that place."""

    def error(self, row: int, field: str, message: str) -> ReplayError: ...


@dataclass(slots=True)
class CsvLocator:
    """Data row index -> the 1-based line on which that record starts."""

    path: str
    lines: I64

    def error(self, row: int, field: str, message: str) -> ReplayError:
        return ReplayError(message, path=self.path, line=int(self.lines[row]))


@dataclass(frozen=True, slots=True)
class CsvLayout:
    """Where a CSV file's records are: the header's field count, and for every data
    record (blank lines excluded, as pandas skips them) its first line and field count."""

    header_fields: int
    lines: I64
    fields: I64


def scan_csv(data: bytes) -> CsvLayout:
    """Count the fields of every record of comma-separated ``data``."""
    if b'"' in data:
        return _scan_quoted(data)
    body = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(body == ord("\n"))
    ends = newlines if body.size and body[-1] == ord("\n") else np.append(newlines, body.size)
    # Byte at position p belongs to the first line whose end is >= p.
    commas = np.bincount(
        np.searchsorted(ends, np.flatnonzero(body == ord(","))), minlength=ends.size
    )
    starts = np.concatenate(([0], ends[:-1] + 1))
    # Lines without commas are blank, whitespace-only or one-field records: few, so
    # telling them apart in Python costs nothing in a real multi-column file.
    blank = np.zeros(ends.size, dtype=np.bool_)
    for k in np.flatnonzero(commas == 0).tolist():
        blank[k] = not data[starts[k] : ends[k]].strip()
    records = np.flatnonzero(~blank)
    if records.size == 0:
        return CsvLayout(0, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    fields = (commas[records] + 1).astype(np.int64)
    return CsvLayout(int(fields[0]), (records[1:] + 1).astype(np.int64), fields[1:])


def _scan_quoted(data: bytes) -> CsvLayout:
    lines: list[int] = []
    fields: list[int] = []
    reader = csv.reader(io.StringIO(data.decode("utf-8", errors="replace"), newline=""))
    previous_end = 0
    try:
        for record in reader:
            first_line = previous_end + 1
            previous_end = reader.line_num
            # pandas skips blank and whitespace-only lines (skip_blank_lines=True).
            if not record or (len(record) == 1 and not record[0].strip()):
                continue
            lines.append(first_line)
            fields.append(len(record))
    except csv.Error:
        pass  # pandas reports the same problem with its own words
    if not lines:
        return CsvLayout(0, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    return CsvLayout(
        fields[0], np.array(lines[1:], dtype=np.int64), np.array(fields[1:], dtype=np.int64)
    )


@dataclass(slots=True)
class JsonLocator:
    """Record index -> 1-based line of that record's field in the JSON text."""

    path: str
    text: str
    array_start: int
    _spans: list[tuple[int, int]] | None = None

    def line_of(self, row: int, field: str) -> int:
        if self._spans is None:
            self._spans = _json_record_spans(self.text, self.array_start)
        start, end = self._spans[row]
        at = self.text.find(f'"{field}"', start, end)
        return self.text.count("\n", 0, at if at >= 0 else start) + 1

    def error(self, row: int, field: str, message: str) -> ReplayError:
        return ReplayError(message, path=self.path, line=self.line_of(row, field))


def _json_record_spans(text: str, array_start: int) -> list[tuple[int, int]]:
    decoder = json.JSONDecoder()
    separators = re.compile(r"[\s,]*")
    spans: list[tuple[int, int]] = []
    pos = array_start + 1
    while True:
        match = separators.match(text, pos)
        pos = match.end() if match else pos
        if pos >= len(text) or text[pos] == "]":
            return spans
        _, end = decoder.raw_decode(text, pos)
        spans.append((pos, end))
        pos = end


@dataclass(slots=True)
class TableLocator:
    """Binary tables have no lines: the error names the 1-based row."""

    path: str

    def error(self, row: int, field: str, message: str) -> ReplayError:
        return ReplayError(message, path=self.path, row=row + 1)


@dataclass(slots=True)
class Peek:
    """What a file is, from its first bytes and its column names (for format detection)."""

    path: str
    file: Path
    kind: Kind
    columns: dict[str, str]  # lower-cased name -> name in the file
    records: list[Any] | None = None  # JSON only: the parsed records
    text: str = ""  # JSON only
    array_start: int = 0  # JSON only: offset of the records' '['


def peek(path: str) -> Peek:
    """Identify a file's container and read its column names, cheaply for CSV and tables."""
    file = Path(path)
    try:
        with file.open("rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise ReplayError(f"cannot read: {exc.strerror or exc}", path=path) from None
    if not head:
        raise ReplayError("the file is empty", path=path)
    if head.startswith(b"ARROW1"):
        return Peek(path, file, "feather", _lower_map(_arrow_columns(path, file, "feather")))
    if head.startswith(b"PAR1"):
        return Peek(path, file, "parquet", _lower_map(_arrow_columns(path, file, "parquet")))
    first = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if first in (b"{", b"["):
        return _peek_json(path, file)
    return Peek(path, file, "csv", _lower_map(_csv_header(path, file)))


def _lower_map(names: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in names:
        out.setdefault(str(name).strip().lower(), str(name))
    return out


def _arrow_columns(path: str, file: Path, kind: Kind) -> list[str]:
    try:
        if kind == "feather":
            with pa_ipc.open_file(str(file)) as reader:
                return [str(n) for n in reader.schema.names]
        return [str(n) for n in pa_parquet.read_schema(str(file)).names]
    except Exception as exc:  # pyarrow raises its own ArrowInvalid/OSError family
        raise ReplayError(f"not a readable {kind} file: {exc}", path=path) from None


def _csv_header(path: str, file: Path) -> list[str]:
    try:
        with file.open(newline="", encoding="utf-8-sig") as fh:
            for record in csv.reader(fh):
                if record and any(cell.strip() for cell in record):
                    return record
    except UnicodeDecodeError:
        raise ReplayError("not UTF-8 text (nor feather/parquet)", path=path) from None
    except csv.Error as exc:
        raise ReplayError(f"not a readable CSV header: {exc}", path=path, line=1) from None
    raise ReplayError("the file has no header line", path=path)


def _peek_json(path: str, file: Path) -> Peek:
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ReplayError("not UTF-8 text", path=path) from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReplayError(f"not valid JSON: {exc.msg}", path=path, line=exc.lineno) from None
    key, records = _find_records(document)
    if records is None:
        raise ReplayError(
            "no list of records found (expected a JSON array of objects, or "
            '{"data": {"poolDayDatas": [...]}})',
            path=path,
        )
    if key is None:
        array_start = text.index("[")
    else:
        match = re.search(rf'"{re.escape(key)}"\s*:\s*\[', text)
        array_start = match.end() - 1 if match else text.index("[")
    names: dict[str, None] = {}
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            locator = JsonLocator(path, text, array_start)
            raise locator.error(i, "", f"record {i + 1} is not a JSON object")
        if i < 16:  # column names from the first records; later missing keys are NaN
            names.update(dict.fromkeys(record))
    return Peek(path, file, "json", _lower_map(names), records, text, array_start)


def _find_records(document: Any) -> tuple[str | None, list[Any] | None]:
    """The record array: the document itself, or a list under ``data`` (subgraph answers)."""
    if isinstance(document, list):
        return None, document
    if not isinstance(document, dict):
        return None, None
    scopes = [document]
    if isinstance(document.get("data"), dict):
        scopes.insert(0, document["data"])
    for scope in scopes:
        for key, value in scope.items():
            if isinstance(value, list):
                return str(key), value
    return None, None


@dataclass(slots=True)
class Source:
    """A file's needed columns as a DataFrame, with where its rows are in the file."""

    path: str
    file: Path
    frame: pd.DataFrame
    columns: dict[str, str]  # every column of the file: lower-cased -> as written
    locator: Locator
    layout: CsvLayout | None = None

    def column(self, name: str) -> pd.Series[Any] | None:
        actual = self.columns.get(name)
        return None if actual is None or actual not in self.frame else self.frame[actual]

    def need(self, name: str) -> pd.Series[Any]:
        """A column the reader has already required."""
        column = self.column(name.lower())
        if column is None:
            raise ReplayError(f"missing column {name!r}", path=self.path)
        return column

    def require(self, *names: str, format_name: str) -> None:
        """Raise (at the header line) unless the file has all ``names`` (any case)."""
        missing = [n for n in names if n.lower() not in self.columns]
        if missing:
            header = ", ".join(self.columns.values())
            what = "column" if len(missing) == 1 else "columns"
            raise ReplayError(
                f"missing {what} {', '.join(repr(m) for m in missing)} for the "
                f"{format_name} format (the file has: {header})",
                path=self.path,
                line=1 if self.layout is not None else None,
            )

    def check(self, *, skip_bad_rows: bool) -> RowCheck:
        """A :class:`RowCheck` for this file's rows, with malformed CSV records flagged."""
        rows = RowCheck(len(self.frame), self.locator, skip_bad_rows)
        layout = self.layout
        if layout is not None and layout.fields.size == rows.size:
            expected = layout.header_fields
            rows.flag(
                layout.fields != expected,
                "",
                lambda r: f"{layout.fields[r]} fields, but the header has {expected}",
            )
        return rows


def materialise(found: Peek, wanted: Iterable[str]) -> Source:
    """Read the columns of ``wanted`` (lower-case names) that the file has."""
    actual = list(dict.fromkeys(found.columns[n] for n in wanted if n in found.columns))
    if found.kind == "csv":
        frame, layout = _read_csv(found.path, found.file, actual)
        return Source(
            found.path,
            found.file,
            frame,
            found.columns,
            CsvLocator(found.path, layout.lines),
            layout,
        )
    if found.kind == "json":
        assert found.records is not None
        frame = pd.DataFrame.from_records(found.records).reindex(columns=actual)
        locator = JsonLocator(found.path, found.text, found.array_start)
        return Source(found.path, found.file, frame, found.columns, locator)
    try:
        if found.kind == "feather":
            frame = pd.read_feather(found.file, columns=actual)
        else:
            frame = pd.read_parquet(found.file, columns=actual)
    except Exception as exc:  # pyarrow's errors are not part of our contract
        raise ReplayError(f"not a readable {found.kind} file: {exc}", path=found.path) from None
    return Source(
        found.path,
        found.file,
        frame.reset_index(drop=True),
        found.columns,
        TableLocator(found.path),
    )


def _read_csv(path: str, file: Path, usecols: list[str]) -> tuple[pd.DataFrame, CsvLayout]:
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ReplayError(f"cannot read: {exc.strerror or exc}", path=path) from None
    data = data.removeprefix(_BOM)
    layout = scan_csv(data)
    if not usecols:  # none of the format's columns: the reader reports which
        return pd.DataFrame(index=pd.RangeIndex(layout.lines.size)), layout
    try:
        # index_col=False: never take the first column as an index when rows have
        # one field more than the header (pandas' guess); field counts are ours.
        frame = pd.read_csv(io.BytesIO(data), usecols=usecols, index_col=False)
    except pd.errors.ParserError as exc:
        raise ReplayError(f"not readable as CSV: {exc}".rstrip(), path=path) from None
    except UnicodeDecodeError:
        raise ReplayError("not UTF-8 text", path=path) from None
    except pd.errors.EmptyDataError:
        raise ReplayError("the file has no header line", path=path) from None
    if len(frame) != layout.lines.size:
        raise ReplayError(
            f"pandas read {len(frame)} rows but the file has {layout.lines.size} records "
            "(unusual line endings?)",
            path=path,
        )
    return frame, layout


# -- vectorised row checks -------------------------------------------------------------


def show(value: Any) -> str:
    """A cell as the user wrote it, for messages: text quoted, numbers plain."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if number.is_integer() and abs(number) < 1e16:
            return str(int(number))
        return repr(number)
    return repr(value) if isinstance(value, bytes) else str(value)


def _is_numeric(series: pd.Series[Any]) -> bool:
    return pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(
        series.dtype
    )


def to_float(series: pd.Series[Any]) -> tuple[F64, Mask]:
    """Column -> a fresh, writable float64 array with NaN for missing cells, and the
    mask of cells that are present but not numbers."""
    if _is_numeric(series):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
        return values, np.zeros(values.size, dtype=np.bool_)
    coerced = pd.to_numeric(series, errors="coerce")
    values = np.array(coerced, dtype=np.float64)
    present = series.notna().to_numpy(dtype=np.bool_)
    return values, present & np.isnan(values)


def datetime_seconds(series: pd.Series[Any]) -> tuple[F64, Mask]:
    """Datetime column (naive = UTC) -> unix seconds as float (NaN for NaT), and NaT mask."""
    stamps = series
    if isinstance(stamps.dtype, pd.DatetimeTZDtype):
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    raw = stamps.to_numpy()
    nat = np.isnat(raw)
    whole = raw.astype("datetime64[s]").astype(np.int64)
    seconds = np.where(nat, np.nan, whole.astype(np.float64))
    return seconds, nat


def _starts_numeric(series: pd.Series[Any]) -> bool:
    first = series.first_valid_index()
    if first is None:
        return True
    try:
        float(series.loc[first])
    except (TypeError, ValueError):
        return False
    return True


def _unix_seconds(numbers: F64) -> F64:
    """Numeric times -> seconds: values >= 1e11 are milliseconds."""
    return np.where(numbers >= _MS_THRESHOLD, numbers / 1000.0, numbers)


@dataclass(slots=True)
class RowCheck:
    """Accumulates failing rows of one file; raises for the first, or counts them."""

    size: int
    locator: Locator
    skip_bad_rows: bool
    bad: Mask = field(init=False)
    excluded: Mask = field(init=False)
    _first: tuple[int, str, str] | None = None

    def __post_init__(self) -> None:
        self.bad = np.zeros(self.size, dtype=np.bool_)
        self.excluded = np.zeros(self.size, dtype=np.bool_)

    def exclude(self, rows: Mask) -> None:
        """Drop rows the format defines as carrying no sample (not malformed, not counted)."""
        self.excluded |= rows
        self.bad |= rows

    def flag(self, failing: Mask, field_name: str, describe: Callable[[int], str]) -> None:
        """Mark ``failing`` rows bad; remember the message of the earliest new one."""
        fresh = failing & ~self.bad
        if not fresh.any():
            return
        self.bad |= fresh
        if self.skip_bad_rows:
            return
        row = int(np.argmax(fresh))
        if self._first is None or row < self._first[0]:
            self._first = (row, field_name, describe(row))

    def finish(self) -> Mask:
        """The mask of good rows; raises the first problem unless skipping."""
        if self._first is not None:
            row, field_name, message = self._first
            raise self.locator.error(row, field_name, message)
        return ~self.bad

    @property
    def skipped(self) -> int:
        return int(np.count_nonzero(self.bad & ~self.excluded))

    def floats(
        self,
        series: pd.Series[Any] | None,
        name: str,
        *,
        required: bool = False,
        minimum: Literal["positive", "nonnegative", "any"] = "any",
        default: float = np.nan,
        label: str | None = None,
    ) -> F64:
        """A numeric column; missing cells are an error if ``required``, else ``default``."""
        name = label or name
        if series is None:
            return np.full(self.size, default)
        values, not_number = to_float(series)
        self.flag(not_number, name, lambda r: f"{name} {show(series.iloc[r])} is not a number")
        missing = np.isnan(values) & ~not_number
        if required:
            self.flag(missing, name, lambda r: f"{name} is missing")
        self.flag(np.isinf(values), name, lambda r: f"{name} {show(values[r])} is not finite")
        if minimum == "positive":
            self.flag(values <= 0, name, lambda r: f"{name} {show(values[r])} must be > 0")
        elif minimum == "nonnegative":
            self.flag(values < 0, name, lambda r: f"{name} {show(values[r])} must be >= 0")
        if not required:
            values[missing] = default
        return values

    def integers(
        self, series: pd.Series[Any], name: str, *, low: int, high: int, label: str | None = None
    ) -> I64:
        """A required integer column in ``[low, high]`` (bad rows hold 0)."""
        name = label or name
        values = self.floats(series, name, required=True, label=label)
        fractional = np.isfinite(values) & (values != np.round(values))
        self.flag(fractional, name, lambda r: f"{name} {show(values[r])} is not an integer")
        outside = (values < low) | (values > high)
        self.flag(outside, name, lambda r: f"{name} {show(values[r])} is outside [{low}, {high}]")
        clean = np.where(self.bad | ~np.isfinite(values), 0.0, values)
        return clean.astype(np.int64)

    def times(self, series: pd.Series[Any], name: str, *, label: str | None = None) -> I64:
        """ISO 8601 text (naive = UTC), datetimes, or unix seconds (milliseconds when
        >= 1e11) -> unix seconds, floored; -1 where this column's time is unusable
        (rows flagged by other checks keep their time)."""
        name = label or name
        if pd.api.types.is_datetime64_any_dtype(series.dtype):
            seconds, missing = datetime_seconds(series)
            not_time = np.zeros(self.size, dtype=np.bool_)
        elif _is_numeric(series) or _starts_numeric(series):
            seconds, not_time = to_float(series)
            missing = np.isnan(seconds) & ~not_time
            seconds = _unix_seconds(seconds)
            if not_time.any():  # a few ISO dates among numbers
                parsed = pd.to_datetime(
                    series[not_time], utc=True, format="ISO8601", errors="coerce"
                )
                seconds[not_time], nat = datetime_seconds(parsed)
                not_time[not_time] = nat
        else:
            # Text dates: parse them first, since a failing to_numeric over a whole
            # column of dates costs more than the date parsing itself.
            parsed = pd.to_datetime(series, utc=True, format="ISO8601", errors="coerce")
            seconds, nat = datetime_seconds(parsed)
            missing = series.isna().to_numpy(dtype=np.bool_)
            not_time = nat & ~missing
            if not_time.any():  # a few unix times among dates
                numbers, not_number = to_float(series[not_time])
                seconds[not_time] = _unix_seconds(numbers)
                not_time[not_time] = not_number
        self.flag(
            not_time,
            name,
            lambda r: f"{name} {show(series.iloc[r])} is not an ISO 8601 date or a unix time",
        )
        self.flag(missing, name, lambda r: f"{name} is missing")
        outside = ~np.isnan(seconds) & ((seconds < 0) | (seconds >= _MS_THRESHOLD))
        self.flag(
            outside,
            name,
            lambda r: (
                f"{name} {show(series.iloc[r])} is out of range (1970 to 5138, "
                "unix seconds or milliseconds)"
            ),
        )
        valid = ~(not_time | missing | outside)
        return np.where(valid, np.floor(np.nan_to_num(seconds)), -1.0).astype(np.int64)

    def labels(self, series: pd.Series[Any], name: str) -> NDArray[np.object_]:
        """A text column of pool labels; empty cells are bad rows."""
        text = series.astype("string").str.strip()
        empty = (text.isna() | (text == "")).to_numpy(dtype=np.bool_, na_value=True)
        self.flag(empty, name, lambda r: f"{name} is empty")
        return text.fillna("").to_numpy(dtype=object)
