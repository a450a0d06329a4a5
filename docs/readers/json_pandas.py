# The job's JSON output in pandas, money exact: json.loads turns each number with a
# fraction into a decimal.Decimal, and the money columns become Decimal objects (dtype
# object). pandas.read_json would parse them as float64: not exact.
import decimal
import glob
import json
from decimal import Decimal

import pandas as pd

OUT = "out"

# Decimal arithmetic rounds to the context's precision, 28 digits by default: a sum of
# DECIMAL(38,4) amounts needs more. Raise it, and make any rounding an error.
decimal.getcontext().prec = 60
decimal.getcontext().traps[decimal.Inexact] = True

MONEY = ["total_sale_volume", "average_transaction_size", "rate_of_return"]

for family in ("time_kpi", "country_kpi"):
    rows = [json.loads(line, parse_float=Decimal)
            for path in sorted(glob.glob(f"{OUT}/{family}/*.json"))
            for line in open(path, encoding="utf-8")]
    df = pd.json_normalize(rows)  # window.start, window.end: strings
    for column in MONEY:
        if column in df:
            df[column] = df[column].map(Decimal)  # 100 came as int: make every value Decimal
    print(family, df["total_sale_volume"].sum())
