#!/usr/bin/env python3
"""Checks that the job's output folder reads exactly in the usual Python readers.

    python check.py OUT_DIR [--require-parquet]

Run it with the python that `scripts/py-readers` prints (it has duckdb, pyarrow, polars,
pandas and pyspark at pinned versions). Exit 0 when every check passes, 1 when one fails
(each failure is said on standard error), 2 on a usage error.

(a) The truth: the JSON lines of OUT/time_kpi/*.json and OUT/country_kpi/*.json, read with
    the standard library only (json.loads, parse_float=decimal.Decimal): row counts and the
    exact sums of total_sale_volume, OPM and total_items per family.
(b) Every snippet of docs/readers/ is run as its own process on OUT (the line
    `OUT = "out"` of a .py, or `SET VARIABLE out = 'out';` of a .sql, gets OUT's absolute
    path), and each `<family> <sum>` it prints must equal the truth as a Decimal.
(c) When OUT holds .parquet files (or with --require-parquet), each JSON file must have its
    Parquet twin and the other way round, and with DuckDB, pyarrow, polars and pandas each:
    the declared column types exactly, no nulls, row counts and sums equal the truth, and
    every row equal the JSON row in the same place. pyarrow also checks the Parquet logical
    types in each file's footer, and Spark the types it reads and every row (as a multiset:
    Spark does not keep file order).

RETAIL_KPI_SKIP_SPARK=1 skips everything Spark (the output says so). Spark runs on Java 17
(`java` on PATH or JAVA_HOME), bound to 127.0.0.1, without its web UI.
"""

import decimal
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOCS = Path(os.environ.get("RETAIL_KPI_READERS_DOCS", HERE.parent.parent / "docs" / "readers"))
SNIPPETS = ["json_duckdb.sql", "json_pandas.py", "json_polars.py", "json_spark.py",
            "parquet_duckdb.sql", "parquet_pyarrow.py", "parquet_polars.py",
            "parquet_pandas.py", "parquet_spark.py"]
FAMILIES = ("time_kpi", "country_kpi")
SNIPPET_TIMEOUT = 600

# Exact arithmetic: any rounding, overflow or invalid operation raises.
decimal.setcontext(decimal.Context(prec=200, traps=[decimal.Inexact, decimal.Overflow,
                                                    decimal.InvalidOperation,
                                                    decimal.DivisionByZero]))

# JSON keys in the order SPEC §5 fixes; Parquet columns in the order the job writes them,
# with a kind that says what each reader must declare.
JSON_KEYS = {
    "time_kpi": ["window", "OPM", "total_sale_volume", "average_transaction_size",
                 "rate_of_return", "orders", "returns", "total_items"],
    "country_kpi": ["window", "country", "OPM", "total_sale_volume", "rate_of_return",
                    "orders", "returns", "total_items"],
}
KINDS = {"window_start": "ts", "window_end": "ts", "country": "str", "OPM": "i64",
         "total_sale_volume": "money", "average_transaction_size": "money",
         "rate_of_return": "ratio", "orders": "i64", "returns": "i64", "total_items": "items"}
COLUMNS = {f: ["window_start", "window_end"] + [k for k in keys if k != "window"]
           for f, keys in JSON_KEYS.items()}
SCALE = {"money": 4, "ratio": 4, "items": 0}

DUCKDB_TYPES = {"ts": "TIMESTAMP WITH TIME ZONE", "str": "VARCHAR", "i64": "BIGINT",
                "money": "DECIMAL(38,4)", "ratio": "DECIMAL(5,4)", "items": "DECIMAL(38,0)"}
PANDAS_TYPES = {"ts": "datetime64[us, UTC]", "str": "str", "i64": "int64",
                "money": "object", "ratio": "object", "items": "object"}
PANDAS_ARROW_TYPES = {"ts": "timestamp[us, tz=UTC][pyarrow]", "str": "string[pyarrow]",
                      "i64": "int64[pyarrow]", "money": "decimal128(38, 4)[pyarrow]",
                      "ratio": "decimal128(5, 4)[pyarrow]", "items": "decimal128(38, 0)[pyarrow]"}
SPARK_TYPES = {"ts": "timestamp", "str": "string", "i64": "bigint", "money": "decimal(38,4)",
               "ratio": "decimal(5,4)", "items": "decimal(38,0)"}

failures = []
summary = []


def fail(what, message):
    failures.append(f"{what}: {message}")
    print(f"FAIL {what}: {message}", file=sys.stderr)


def ok(what, message):
    summary.append(f"ok   {what}: {message}")
    print(summary[-1])


# ---------------------------------------------------------------------------------------
# (a) the truth, from the JSON lines with the standard library only

def epoch_micros(text):
    """'YYYY-MM-DDTHH:MM:SSZ' (any year: 0000 and 10000 occur) -> microseconds since 1970."""
    m = re.fullmatch(r"(\d{4,5})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)Z", text)
    if not m:
        raise ValueError(f"window time {text!r} is not YYYY-MM-DDTHH:MM:SSZ")
    y, mo, d, h, mi, s = map(int, m.groups())
    y -= mo <= 2  # days from civil (proleptic Gregorian), H. Hinnant
    era, yoe = divmod(y, 400)
    doy = (153 * (mo + (-3 if mo > 2 else 9)) + 2) // 5 + d - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    return (days * 86400 + h * 3600 + mi * 60 + s) * 1_000_000


def read_truth(out):
    """{family: {"files": [stem...], "rows": {stem: [row tuple...]}, "sums": {...}}}."""
    truth = {}
    for family in FAMILIES:
        paths = sorted(glob.glob(str(out / family / "*.json")))
        if not paths:
            raise SystemExit(f"check.py: no {family}/*.json in {out}: nothing to check")
        rows_by_file = {}
        for path in paths:
            rows = []
            with open(path, encoding="utf-8", newline="") as f:
                text = f.read()
            if not text.endswith("\n"):
                raise SystemExit(f"check.py: {path} does not end with a newline")
            for n, line in enumerate(text[:-1].split("\n"), 1):
                where = f"{path}:{n}"
                pairs = json.loads(line, parse_float=Decimal, object_pairs_hook=lambda p: p)
                keys = [k for k, _ in pairs]
                if keys != JSON_KEYS[family]:
                    raise SystemExit(f"check.py: {where}: keys {keys}, expected {JSON_KEYS[family]}")
                obj = dict(pairs)
                window = dict(obj.pop("window"))
                if list(window) != ["start", "end"]:
                    raise SystemExit(f"check.py: {where}: window keys {list(window)}")
                obj["window_start"] = epoch_micros(window["start"])
                obj["window_end"] = epoch_micros(window["end"])
                row = []
                for col in COLUMNS[family]:
                    v = obj[col]
                    kind = KINDS[col]
                    if kind in ("money", "ratio"):
                        if type(v) not in (int, Decimal):
                            raise SystemExit(f"check.py: {where}: {col} is not a number: {v!r}")
                        v = Decimal(v)
                    elif kind in ("i64", "ts", "items"):
                        if type(v) is not int:
                            raise SystemExit(f"check.py: {where}: {col} is not an integer: {v!r}")
                    elif type(v) is not str:
                        raise SystemExit(f"check.py: {where}: {col} is not a string: {v!r}")
                    row.append(v)
                rows.append(tuple(row))
            rows_by_file[Path(path).stem] = rows
        every = [r for rows in rows_by_file.values() for r in rows]
        idx = {c: i for i, c in enumerate(COLUMNS[family])}
        truth[family] = {
            "files": list(rows_by_file),
            "rows": rows_by_file,
            "count": len(every),
            "total_sale_volume": sum((r[idx["total_sale_volume"]] for r in every), Decimal(0)),
            "OPM": sum(r[idx["OPM"]] for r in every),
            "total_items": sum(r[idx["total_items"]] for r in every),
        }
    return truth


# ---------------------------------------------------------------------------------------
# (b) the snippets

def spark_env():
    env = dict(os.environ)
    env["SPARK_LOCAL_IP"] = "127.0.0.1"
    env["PYSPARK_SUBMIT_ARGS"] = ("--conf spark.ui.enabled=false "
                                  "--conf spark.driver.bindAddress=127.0.0.1 "
                                  "--conf spark.driver.host=127.0.0.1 pyspark-shell")
    return env


SQL_RUNNER = """
import duckdb, sys
for family, total in duckdb.connect().execute(open(sys.argv[1], encoding="utf-8").read()).fetchall():
    print(family, total)
"""


def run_snippet(name, out, tmp):
    """Runs docs/readers/NAME on OUT; returns (stdout, seconds) or raises RuntimeError."""
    source = (DOCS / name).read_text(encoding="utf-8")
    if name.endswith(".py"):
        pattern, literal = r'^OUT = "out"$', "OUT = " + repr(str(out))
    else:
        pattern, literal = r"^SET VARIABLE out = 'out';$", \
            "SET VARIABLE out = '" + str(out).replace("'", "''") + "';"
    source, n = re.subn(pattern, lambda _: literal, source, flags=re.M)
    if n != 1:
        raise RuntimeError(f"expected exactly one line matching {pattern!r}, found {n}")
    script = tmp / name
    script.write_text(source, encoding="utf-8")
    if name.endswith(".py"):
        cmd = [sys.executable, str(script)]
    else:
        runner = tmp / "run_sql.py"
        runner.write_text(SQL_RUNNER, encoding="utf-8")
        cmd = [sys.executable, str(runner), str(script)]
    env = spark_env() if "spark" in name else None
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True,
                              timeout=SNIPPET_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"did not finish in {SNIPPET_TIMEOUT} s")
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"exit {proc.returncode}; stderr ends:\n{tail}")
    return proc.stdout, seconds


def check_snippet(name, out, tmp, truth):
    try:
        stdout, seconds = run_snippet(name, out, tmp)
    except RuntimeError as e:
        fail(name, str(e))
        return
    printed = {}
    for line in stdout.splitlines():
        m = re.fullmatch(r"(time_kpi|country_kpi) (\S+)", line.strip())
        if m:
            if m[1] in printed:
                fail(name, f"printed {m[1]} twice")
                return
            printed[m[1]] = m[2]
    bad = []
    for family in FAMILIES:
        if family not in printed:
            fail(name, f"printed no '{family} <sum>' line; stdout was:\n{stdout}")
            return
        try:
            got = Decimal(printed[family])
        except decimal.InvalidOperation:
            got = None
        want = truth[family]["total_sale_volume"]
        if got is None or not got.is_finite() or got != want:
            bad.append(f"{family} printed {printed[family]}, exact sum is {want}")
    if bad:
        fail(name, "; ".join(bad))
    else:
        ok(name, " ".join(f"{f}={printed[f]}" for f in FAMILIES) + f" ({seconds:.1f} s)")


# ---------------------------------------------------------------------------------------
# (c) the Parquet files

def compare_rows(what, family, got_rows, want_rows, columns, order="in file order"):
    """Row by row, in order; values compare as Decimal / int / str, never as float."""
    if len(got_rows) != len(want_rows):
        fail(what, f"{family}: {len(got_rows)} rows, the JSON has {len(want_rows)}")
        return False
    for n, (got, want) in enumerate(zip(got_rows, want_rows)):
        for col, g, w in zip(columns, got, want):
            if isinstance(g, float) or type(g) is not type(w) or g != w:
                fail(what, f"{family} row {n} (0-based, {order}) column {col}: "
                           f"got {g!r} ({type(g).__name__}), the JSON has {w!r}")
                return False
    return True


def norm(value, kind):
    """total_items: a reader's integral Decimal -> int, as in the truth; the rest as is."""
    if kind == "items" and isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    return value


def check_sums(what, family, truth, count, tsv, opm, items):
    want = truth[family]
    got = {"rows": count, "total_sale_volume": tsv, "OPM": opm, "total_items": items}
    exp = {"rows": want["count"], "total_sale_volume": want["total_sale_volume"],
           "OPM": want["OPM"], "total_items": want["total_items"]}
    bad = [f"{k} {got[k]!r} != {exp[k]!r}" for k in got
           if isinstance(got[k], float) or got[k] != exp[k]]
    if bad:
        fail(what, f"{family}: " + "; ".join(bad))
        return False
    return True


def check_types(what, family, got, expected_by_kind, label=None):
    want = [(c, expected_by_kind[KINDS[c]]) for c in COLUMNS[family]]
    got = [(c, str(t)) for c, t in got]
    if got != want:
        fail(what, f"{label or family} columns/types:\n  got      {got}\n  expected {want}")
        return False
    return True


def parquet_files(out, family, truth):
    return [str(out / family / f"{stem}.parquet") for stem in truth[family]["files"]]


def check_pyarrow(out, truth):
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    what = "parquet/pyarrow"
    arrow_types = {"ts": pa.timestamp("us", tz="UTC"), "str": pa.string(), "i64": pa.int64(),
                   "money": pa.decimal128(38, 4), "ratio": pa.decimal128(5, 4),
                   "items": pa.decimal128(38, 0)}
    logical = {"ts": ("TIMESTAMP", {"isAdjustedToUTC": True, "timeUnit": "microseconds"}),
               "str": ("STRING", {}), "i64": ("NONE", {}),
               "money": ("DECIMAL", {"precision": 38, "scale": 4}),
               "ratio": ("DECIMAL", {"precision": 5, "scale": 4}),
               "items": ("DECIMAL", {"precision": 38, "scale": 0})}
    good = True
    for family in FAMILIES:
        tables = []
        for path, stem in zip(parquet_files(out, family, truth), truth[family]["files"]):
            pf = pq.ParquetFile(path)
            # The footer: the Parquet logical type of each column.
            for i, col in enumerate(COLUMNS[family]):
                if i >= len(pf.schema):
                    break
                c = pf.schema.column(i)
                lt = json.loads(c.logical_type.to_json())
                want_type, want_fields = logical[KINDS[col]]
                if KINDS[col] == "i64":
                    fine = c.physical_type == "INT64" and (
                        lt.get("Type") == "None" or
                        (lt.get("Type") == "Int" and lt.get("bitWidth") == 64 and lt.get("isSigned")))
                else:
                    fine = c.logical_type.type == want_type and all(
                        lt.get(k) == v for k, v in want_fields.items())
                    if KINDS[col] == "ts":
                        fine = fine and c.physical_type == "INT64"
                if c.name != col or not fine:
                    fail(what, f"{path}: column {i} is {c.name} {c.physical_type} {lt}, "
                               f"expected {col} {want_type} {want_fields}")
                    good = False
            table = pq.read_table(path)
            if not check_types(what, family, [(f.name, f.type) for f in table.schema],
                               {k: str(v) for k, v in arrow_types.items()}, label=path):
                good = False
                continue
            nulls = {c: table[c].null_count for c in table.column_names if table[c].null_count}
            if nulls:
                fail(what, f"{path}: nulls {nulls}")
                good = False
            rows = list(zip(*[
                (table[c].cast(pa.int64()).to_pylist() if KINDS[c] == "ts"
                 else [norm(v, KINDS[c]) for v in table[c].to_pylist()])
                for c in COLUMNS[family]]))
            good &= compare_rows(what, f"{family} {stem}", rows,
                                 truth[family]["rows"][stem], COLUMNS[family])
            tables.append(table)
        if not good:
            continue
        t = pa.concat_tables(tables)
        good &= check_sums(what, family, truth, t.num_rows,
                           pc.sum(t["total_sale_volume"]).as_py(),
                           pc.sum(t["OPM"]).as_py(),
                           norm(pc.sum(t["total_items"]).as_py(), "items"))
    if good:
        ok(what, "footer logical types, Arrow types, no nulls, every row equal to its JSON "
                 "line, exact sums and counts")


def check_duckdb(out, truth):
    import duckdb

    what = "parquet/duckdb"
    con = duckdb.connect()
    good = True
    for family in FAMILIES:
        files = parquet_files(out, family, truth)
        src = f"read_parquet({files!r})"
        described = con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()
        if not check_types(what, family, [(r[0], r[1]) for r in described], DUCKDB_TYPES):
            good = False
            continue
        cols = ", ".join(f'epoch_us("{c}")' if KINDS[c] == "ts" else f'"{c}"'
                         for c in COLUMNS[family])
        # read_parquet over a list keeps the list's order, and each file's rows in order.
        rows = [tuple(norm(v, KINDS[c]) for c, v in zip(COLUMNS[family], r))
                for r in con.execute(f"SELECT {cols} FROM {src}").fetchall()]
        want = [r for stem in truth[family]["files"] for r in truth[family]["rows"][stem]]
        good &= compare_rows(what, family, rows, want, COLUMNS[family])
        nulls = " + ".join(f'count(*) - count("{c}")' for c in COLUMNS[family])
        count, tsv, opm, items, n_null = con.execute(
            f'SELECT count(*), sum(total_sale_volume), sum("OPM"), sum(total_items), {nulls} '
            f"FROM {src}").fetchone()
        if n_null:
            fail(what, f"{family}: {n_null} nulls")
            good = False
        good &= check_sums(what, family, truth, count, tsv, int(opm), norm(items, "items"))
    if good:
        ok(what, "DESCRIBE types, no nulls, every row equal to the JSON (file order), "
                 "exact sums and counts")


def check_polars(out, truth):
    import polars as pl

    what = "parquet/polars"
    types = {"ts": pl.Datetime("us", "UTC"), "str": pl.String, "i64": pl.Int64,
             "money": pl.Decimal(38, 4), "ratio": pl.Decimal(5, 4), "items": pl.Decimal(38, 0)}
    good = True
    for family in FAMILIES:
        df = pl.read_parquet(parquet_files(out, family, truth))
        got = list(df.schema.items())
        want = [(c, types[KINDS[c]]) for c in COLUMNS[family]]
        if got != want:
            fail(what, f"{family} columns/types:\n  got      {got}\n  expected {want}")
            good = False
            continue
        if df.null_count().sum_horizontal().item():
            fail(what, f"{family}: nulls {df.null_count().to_dicts()}")
            good = False
        cols = [df[c].dt.epoch("us").to_list() if KINDS[c] == "ts"
                else [norm(v, KINDS[c]) for v in df[c].to_list()] for c in COLUMNS[family]]
        want_rows = [r for stem in truth[family]["files"] for r in truth[family]["rows"][stem]]
        good &= compare_rows(what, family, list(zip(*cols)), want_rows, COLUMNS[family])
        good &= check_sums(what, family, truth, df.height, df["total_sale_volume"].sum(),
                           df["OPM"].sum(), norm(df["total_items"].sum(), "items"))
    if good:
        ok(what, "Datetime('us','UTC') / Decimal(38,4) / Decimal(5,4) / Decimal(38,0) / "
                 "Int64 / String, no nulls, every row equal, exact sums and counts")


def check_pandas(out, truth):
    import pandas as pd

    what = "parquet/pandas"
    good = True
    for family in FAMILIES:
        files = parquet_files(out, family, truth)
        want_rows = [r for stem in truth[family]["files"] for r in truth[family]["rows"][stem]]
        # Default read (pyarrow's to_pandas): decimals as decimal.Decimal objects.
        df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        if not check_types(what, family, list(df.dtypes.items()), PANDAS_TYPES):
            good = False
            continue
        for c in COLUMNS[family]:
            kind = KINDS[c]
            if kind in SCALE:
                odd = [v for v in df[c] if not isinstance(v, Decimal)
                       or v.as_tuple().exponent != -SCALE[kind]]
                if odd:
                    fail(what, f"{family}.{c}: {len(odd)} values not Decimal with "
                               f"{SCALE[kind]} decimal places, e.g. {odd[0]!r}")
                    good = False
        if df.isna().to_numpy().any():
            fail(what, f"{family}: nulls {df.isna().sum().to_dict()}")
            good = False
        cols = [df[c].astype("int64").tolist() if KINDS[c] == "ts"
                else [norm(v, KINDS[c]) for v in df[c].tolist()] for c in COLUMNS[family]]
        good &= compare_rows(what, family, list(zip(*cols)), want_rows, COLUMNS[family])
        # pandas sums Decimal objects in the current decimal context (here exact, or raise).
        good &= check_sums(what, family, truth, len(df), df["total_sale_volume"].sum(),
                           int(df["OPM"].sum()), norm(df["total_items"].sum(), "items"))
        # dtype_backend="pyarrow": the Arrow types kept, and Arrow doing the sums.
        da = pd.concat([pd.read_parquet(f, dtype_backend="pyarrow") for f in files],
                       ignore_index=True)
        if not check_types(what + " (dtype_backend=pyarrow)", family,
                           list(da.dtypes.items()), PANDAS_ARROW_TYPES):
            good = False
            continue
        good &= check_sums(what + " (dtype_backend=pyarrow)", family, truth, len(da),
                           da["total_sale_volume"].sum(), int(da["OPM"].sum()),
                           norm(da["total_items"].sum(), "items"))
    if good:
        ok(what, "dtypes (datetime64[us, UTC], int64, str, object holding Decimal of the "
                 "right scale; and the ArrowDtype ones), no nulls, every row equal, exact "
                 "sums and counts")


SPARK_CHECK = r"""
import json, sys
from pyspark.sql import SparkSession, functions as F
files = json.loads(sys.argv[1])
spark = (SparkSession.builder.master("local[*]")
         .config("spark.sql.session.timeZone", "UTC")
         .config("spark.sql.parquet.datetimeRebaseModeInRead", "CORRECTED").getOrCreate())
result = {}
for family, paths in files.items():
    df = spark.read.parquet(*paths)
    cols = [F.unix_micros(c) if t.simpleString() == "timestamp" else F.col(c).cast("string")
            if t.simpleString().startswith("decimal") else F.col(c)
            for c, t in ((f.name, f.dataType) for f in df.schema.fields)]
    agg = df.agg(F.count(F.lit(1)), F.sum("total_sale_volume").cast("string"),
                 F.sum("OPM"), F.sum("total_items").cast("string")).first()
    result[family] = {"types": [[f.name, f.dataType.simpleString()] for f in df.schema.fields],
                      "rows": [list(r) for r in df.select(cols).collect()],
                      "sums": [agg[0], agg[1], agg[2], agg[3]]}
spark.stop()
print("RESULT " + json.dumps(result))
"""


def check_spark_parquet(out, truth, tmp):
    what = "parquet/spark"
    script = tmp / "spark_check.py"
    script.write_text(SPARK_CHECK, encoding="utf-8")
    files = {f: parquet_files(out, f, truth) for f in FAMILIES}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(script), json.dumps(files)], cwd=tmp,
                          env=spark_env(), capture_output=True, text=True,
                          timeout=SNIPPET_TIMEOUT)
    seconds = time.monotonic() - start
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        fail(what, f"exit {proc.returncode}; stderr ends:\n{tail}")
        return
    result = json.loads(lines[-1][len("RESULT "):])
    good = True
    for family in FAMILIES:
        r = result[family]
        if not check_types(what, family, r["types"], SPARK_TYPES):
            good = False
            continue
        rows = [tuple(norm(Decimal(v), KINDS[c]) if KINDS[c] in SCALE else v
                      for c, v in zip(COLUMNS[family], row)) for row in r["rows"]]
        want = [r2 for stem in truth[family]["files"] for r2 in truth[family]["rows"][stem]]
        key = lambda row: tuple(str(v.normalize()) if isinstance(v, Decimal) else str(v)
                                for v in row)
        good &= compare_rows(what, family, sorted(rows, key=key), sorted(want, key=key),
                             COLUMNS[family], order="both sorted: Spark keeps no file order")
        count, tsv, opm, items = r["sums"]
        good &= check_sums(what, family, truth, count, Decimal(tsv), opm,
                           norm(Decimal(items), "items"))
    if good:
        ok(what, f"types (timestamp, decimal(38,4), decimal(5,4), decimal(38,0), bigint, "
                 f"string), every row equal (as a multiset), exact sums and counts "
                 f"({seconds:.1f} s)")


# ---------------------------------------------------------------------------------------

def main(argv):
    args = [a for a in argv if not a.startswith("--")]
    flags = [a for a in argv if a.startswith("--")]
    if len(args) != 1 or any(f != "--require-parquet" for f in flags):
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(args[0]).resolve()
    if not out.is_dir():
        print(f"check.py: {out} is not a folder", file=sys.stderr)
        return 2
    skip_spark = os.environ.get("RETAIL_KPI_SKIP_SPARK") == "1"
    missing = [n for n in SNIPPETS if not (DOCS / n).is_file()]
    if missing:
        fail("docs/readers", f"missing {missing} in {DOCS}")

    truth = read_truth(out)
    for family in FAMILIES:
        t = truth[family]
        print(f"truth (stdlib json, Decimal) {family}: {len(t['files'])} files, {t['count']} rows,"
              f" total_sale_volume={t['total_sale_volume']} OPM={t['OPM']}"
              f" total_items={t['total_items']}")

    # Parquet twins: all or nothing.
    have = {f: {Path(p).stem for p in glob.glob(str(out / f / "*.parquet"))} for f in FAMILIES}
    parquet = any(have.values()) or "--require-parquet" in flags
    if parquet:
        for family in FAMILIES:
            json_stems = set(truth[family]["files"])
            if have[family] != json_stems:
                def few(names):
                    names = sorted(names)
                    return f"{len(names)} {names[:3]}{' ...' if len(names) > 3 else ''}"
                fail("parquet files", f"{family}: JSON without Parquet twin: "
                     f"{few(json_stems - have[family])}; Parquet without JSON twin: "
                     f"{few(have[family] - json_stems)}")
                parquet = False
    else:
        print("SKIPPED Parquet checks and snippets: no .parquet files in OUT "
              "(--require-parquet makes that a failure)")

    if not skip_spark and not os.environ.get("JAVA_HOME") and not shutil.which("java"):
        fail("spark", "no java on PATH and no JAVA_HOME: PySpark needs Java 17 "
                      "(scripts/install-deps installs it); RETAIL_KPI_SKIP_SPARK=1 skips Spark")
        skip_spark = True
    if skip_spark:
        print("SKIPPED Spark (RETAIL_KPI_SKIP_SPARK=1): json_spark.py, parquet_spark.py, "
              "Spark Parquet types and rows")

    with tempfile.TemporaryDirectory(prefix="retail-kpi-readers-") as tmp:
        tmp = Path(tmp)
        for name in SNIPPETS:
            if name in missing or (name.startswith("parquet_") and not parquet):
                continue
            if "spark" in name and skip_spark:
                continue
            check_snippet(name, out, tmp, truth)
        if parquet:
            for check in (check_pyarrow, check_duckdb, check_polars, check_pandas):
                try:
                    check(out, truth)
                except Exception as e:  # a reader that cannot read the files at all
                    fail(check.__name__.replace("check_", "parquet/"), f"{type(e).__name__}: {e}")
            if not skip_spark:
                check_spark_parquet(out, truth, tmp)

    if failures:
        print(f"readers: {len(failures)} FAILED, {len(summary)} ok:", file=sys.stderr)
        for f in failures:
            print("  " + f.replace("\n", "\n  "), file=sys.stderr)
        return 1
    print(f"readers: all {len(summary)} checks ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
