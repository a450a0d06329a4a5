# The job's Parquet output in pandas (through pyarrow): money columns hold decimal.Decimal
# objects (dtype object), windows are datetime64[us, UTC]. The folders also hold the JSON
# files, so read the *.parquet files by name rather than the folder.
import decimal
import glob

import pandas as pd

OUT = "out"

# Decimal arithmetic rounds to the context's precision, 28 digits by default: a sum of
# DECIMAL(38,4) amounts needs more. Raise it, and make any rounding an error.
# (With pd.read_parquet(..., dtype_backend="pyarrow") the columns stay decimal128(38,4)
# and Arrow sums them exactly without this.)
decimal.getcontext().prec = 60
decimal.getcontext().traps[decimal.Inexact] = True

for family in ("time_kpi", "country_kpi"):
    files = sorted(glob.glob(f"{OUT}/{family}/*.parquet"))
    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    print(family, df["total_sale_volume"].sum())
